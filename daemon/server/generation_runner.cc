#include "server/generation_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/image_formats.h"
#include "engine/infotext.h"
#include "engine/latent_preview.h"
#include "engine/nn_util.h"
#include "host/job_hooks.h"
#include "server/generation_settings.h"
#include "server/plugin_args.h"
#include "util/log.h"

namespace atelier::server {
namespace {

namespace fs = std::filesystem;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The host's job hooks as the engine's sampler and UNet hooks: the CFG denoiser hooks pass through, and each UNet
// call gets the plugins' residuals and block hook with the step of the evaluation it belongs to.
class HookBridge final : public engine::CfgHooks, public engine::UNetCallHooks {
 public:
  explicit HookBridge(host::JobHooks& hooks) : hooks_(hooks) {}

  absl::Status BeforeModel(DenoiserInputs& inputs) override {
    step_ = inputs.sampling_step;
    total_ = inputs.total_sampling_steps;
    cond_rows_ = inputs.cond_rows;
    rows_ = inputs.x.defined() ? inputs.x.size(0) : 0;
    calls_in_evaluation_ = 0;
    return hooks_.HasCfgHooks() ? hooks_.CfgDenoiser(inputs) : absl::OkStatus();
  }
  absl::Status AfterModel(int step, int total, int cond_rows, at::Tensor& x) override {
    return hooks_.HasCfgHooks() ? hooks_.CfgDenoised(step, total, cond_rows, x) : absl::OkStatus();
  }
  absl::Status AfterCfg(int step, int total, at::Tensor& x) override {
    return hooks_.HasCfgHooks() ? hooks_.CfgAfterCfg(step, total, x) : absl::OkStatus();
  }

  absl::Status Prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& context,
                       std::array<at::Tensor, engine::kUNetResiduals>& residuals,
                       engine::UNetCallOptions& options) override {
    // The denoiser calls the UNet once per evaluation, or twice (conditional rows, then unconditional ones) when
    // the prompts' token counts differ.
    const int64_t rows = x.size(0);
    int cond_rows = 0;
    if (rows == rows_ || calls_in_evaluation_ == 0) cond_rows = static_cast<int>(std::min<int64_t>(cond_rows_, rows));
    ++calls_in_evaluation_;
    if (hooks_.HasUnetResiduals()) {
      if (absl::Status st = hooks_.UnetResiduals(step_, total_, cond_rows, x, t, context, residuals); !st.ok()) {
        return st;
      }
      if (std::any_of(residuals.begin(), residuals.end(), [](const at::Tensor& r) { return r.defined(); })) {
        options.residuals = &residuals;
      }
    }
    if (hooks_.HasUnetBlock()) {
      host::JobHooks* hooks = &hooks_;
      options.block_hook = [hooks, cond_rows, context](const engine::UNetBlockPoint& where, at::Tensor& hidden) {
        return hooks->UnetBlock(where.point, static_cast<int>(where.kind), where.index, cond_rows, hidden, context);
      };
    }
    return absl::OkStatus();
  }

 private:
  host::JobHooks& hooks_;
  int step_ = 0, total_ = 0, cond_rows_ = 0;
  int64_t rows_ = 0;
  int calls_in_evaluation_ = 0;
};

engine::PixelImage ToPixels(const at::Tensor& rgb) {
  const at::Tensor c = rgb.contiguous();
  engine::PixelImage image;
  image.height = static_cast<int>(c.size(0));
  image.width = static_cast<int>(c.size(1));
  image.channels = 3;
  image.pixels.assign(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
  return image;
}

absl::StatusOr<v1::Image> EncodeForClient(const at::Tensor& rgb, const engine::ImageEncodeOptions& options) {
  auto data = engine::EncodeImage(ToPixels(rgb), options);
  if (!data.ok()) return data.status();
  v1::Image image;
  image.set_data(*std::move(data));
  image.set_mime_type(engine::ImageMimeType(options.format));
  image.set_width(static_cast<int>(rgb.size(1)));
  image.set_height(static_cast<int>(rgb.size(0)));
  return image;
}

// WebUI's image_grid layout for previews of a batch: rows = the largest divisor of n not above sqrt(n).
at::Tensor Grid(const at::Tensor& images) {  // uint8 [B, H, W, 3] -> [rows * H, cols * W, 3]
  const int64_t n = images.size(0);
  if (n == 1) return images[0];
  int64_t rows = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
  while (rows > 1 && n % rows != 0) --rows;
  const int64_t cols = (n + rows - 1) / rows;
  const int64_t h = images.size(1), w = images.size(2);
  return images.reshape({rows, cols, h, w, 3}).permute({0, 2, 1, 3, 4}).reshape({rows * h, cols * w, 3});
}

// Shrinks uint8 HWC so that its longer side is at most max_size (antialiased), keeping the aspect.
at::Tensor Bounded(const at::Tensor& image, int max_size) {
  const int64_t h = image.size(0), w = image.size(1);
  if (std::max(h, w) <= max_size) return image;
  const double scale = static_cast<double>(max_size) / std::max(h, w);
  const int64_t nh = std::max<int64_t>(1, std::lround(h * scale)), nw = std::max<int64_t>(1, std::lround(w * scale));
  const at::Tensor x = image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  return at::_upsample_bilinear2d_aa(x, {nh, nw}, false).round().clamp(0, 255).to(at::kByte)[0].permute({1, 2, 0})
      .contiguous();
}

}  // namespace

GenerationRunner::GenerationRunner(engine::ModelManager& models, const host::PluginRegistry& plugins,
                                   const engine::ClipTokenizer& tokenizer)
    : models_(models), plugins_(plugins), tokenizer_(tokenizer) {}

GenerationRunner::~GenerationRunner() = default;

absl::Status GenerationRunner::Prepare(v1::GenerateRequest& request) const {
  try {
    return Check(request);
  } catch (const std::exception& e) {  // e.g. bad_alloc decoding an image: refuse the request, keep serving
    return absl::ResourceExhaustedError(absl::StrCat("cannot take this request: ", e.what()));
  }
}

absl::Status GenerationRunner::Check(const v1::GenerateRequest& request) const {
  auto settings = JobSettingsFromRequest(request);
  if (!settings.ok()) return settings.status();
  const std::shared_ptr<const engine::Sd1Weights> current = models_.current();
  std::optional<engine::ModelFileEntry> checkpoint;
  if (!settings->checkpoint.empty()) {
    auto found = models_.FindCheckpoint(settings->checkpoint);
    if (!found.ok()) {
      return absl::Status(found.status().code(),
                          absl::StrCat("override_settings.sd_model_checkpoint: ", found.status().message()));
    }
    checkpoint = *found;
  } else if (current == nullptr) {
    return absl::FailedPreconditionError(
        "no checkpoint is loaded: put an SD1.x .safetensors/.ckpt in <models-dir>/Stable-diffusion and load it "
        "(atelier load NAME), or name one in override_settings.sd_model_checkpoint");
  }
  if (settings->vae.has_value()) {
    if (!checkpoint) {
      auto found = models_.FindCheckpoint(current->filename);
      if (!found.ok()) return found.status();
      checkpoint = *found;
    }
    auto vae = models_.ResolveVae(*settings->vae, *checkpoint);
    if (!vae.ok()) {
      return absl::Status(vae.status().code(), absl::StrCat("override_settings.sd_vae: ", vae.status().message()));
    }
  }
  if (request.mode() == v1::MODE_IMG2IMG) {
    auto image = engine::DecodeImageRgb(request.init_images(0));
    if (!image.ok()) return absl::InvalidArgumentError(absl::StrCat("init_images[0]: ", image.status().message()));
    if (!request.mask().empty()) {
      auto mask = engine::DecodeImage(request.mask());
      if (!mask.ok()) return absl::InvalidArgumentError(absl::StrCat("mask: ", mask.status().message()));
    }
  }
  if (settings->preview.method == engine::PreviewMethod::kTaesd) {
    const engine::ModelFolders* folders = models_.folders();
    absl::Status missing = absl::FailedPreconditionError("TAESD previews need a models directory with VAE-approx/");
    if (folders != nullptr) {
      auto file = engine::Taesd::FindFile(folders->FolderPath(engine::ModelFolder::kVaeApprox),
                                          engine::TaesdPart::kDecoder);
      missing = file.ok() ? absl::OkStatus() : absl::FailedPreconditionError(file.status().message());
    }
    if (!missing.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("preview method TAESD: ", missing.message(),
                                                        "; or choose approx-cheap, approx-comfyui or full"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const engine::Sd1Pipeline*> GenerationRunner::PipelineFor(const std::string& checkpoint,
                                                                         const std::optional<std::string>& vae,
                                                                         JobContext& context) {
  std::shared_ptr<const engine::Sd1Weights> weights = models_.current();
  if (!checkpoint.empty() || vae.has_value()) {
    // A job naming another checkpoint or VAE switches to it (it stays loaded: loading is the expensive part). The
    // VAE choice the model was loaded with carries over unless the job names one (sd_vae is its own option).
    const auto start = std::chrono::steady_clock::now();
    const std::string wanted = !checkpoint.empty() ? checkpoint : weights ? weights->filename : std::string();
    std::string vae_request = vae.value_or(models_.current_vae_request());
    const engine::Sd1Weights* previous = weights.get();
    if (vae_request.empty()) vae_request = "Automatic";
    auto entry = models_.FindCheckpoint(wanted);
    if (!entry.ok()) return entry.status();
    const bool same = weights != nullptr && entry->filename == weights->filename &&
                      vae_request == models_.current_vae_request();
    if (!same) {
      weights.reset();
      ReleaseModel();  // a switch must not hold two pipelines' worth of memory
      auto loaded = models_.Load(wanted, vae_request);
      if (!loaded.ok()) return loaded.status();
      if (loaded->get() != previous) {
        plugins_.NotifyModelLoaded((*loaded)->title, (*loaded)->filename, (*loaded)->layout.unet_in_channels);
        context.AddTiming("load", SecondsSince(start));
      }
      weights = *loaded;
    }
  }
  if (weights == nullptr) {
    return absl::FailedPreconditionError("no checkpoint is loaded (it was unloaded after the job was queued)");
  }
  if (weights != pipeline_weights_ || pipeline_ == nullptr) {
    pipeline_.reset();
    embeddings_ = std::make_unique<engine::EmbeddingDatabase>(
        models_.folders() != nullptr
            ? engine::EmbeddingDatabase::Load(*models_.folders(), tokenizer_, weights->config.clip.hidden_size)
            : engine::EmbeddingDatabase());
    auto created = engine::Sd1Pipeline::Create(weights, tokenizer_, embeddings_.get());
    if (!created.ok()) return created.status();
    pipeline_ = *std::move(created);
    pipeline_weights_ = weights;
  }
  return pipeline_.get();
}

void GenerationRunner::ReleaseModel() {
  pipeline_.reset();
  embeddings_.reset();
  pipeline_weights_.reset();
}

absl::StatusOr<const engine::Taesd*> GenerationRunner::TaesdDecoder() {
  if (taesd_ == nullptr) {
    if (models_.folders() == nullptr) return absl::FailedPreconditionError("no models directory for VAE-approx/");
    auto loaded = engine::Taesd::LoadFromFolder(models_.folders()->FolderPath(engine::ModelFolder::kVaeApprox));
    if (!loaded.ok()) return loaded.status();
    taesd_ = *std::move(loaded);
  }
  return taesd_.get();
}

absl::Status GenerationRunner::Run(JobContext& context) {
  const v1::GenerateRequest& request = context.request();
  auto settings_or = JobSettingsFromRequest(request);
  if (!settings_or.ok()) return settings_or.status();
  JobSettings& settings = *settings_or;
  engine::GenerationParams& params = settings.params;
  if (!settings.ignored_settings.empty()) {
    LogDebug(absl::StrCat("job ", context.job_id(), ": override_settings not used by atelierd: ",
                          absl::StrJoin(settings.ignored_settings, ", ")));
  }

  auto pipeline_or = PipelineFor(settings.checkpoint, settings.vae, context);
  if (!pipeline_or.ok()) return pipeline_or.status();
  const engine::Sd1Pipeline& pipeline = **pipeline_or;
  const bool img2img = request.mode() == v1::MODE_IMG2IMG;
  if (img2img) {
    auto image = DecodeInitImage(request.init_images(0), settings);
    if (!image.ok()) return image.status();
    params.init_image = *std::move(image);
    if (settings.inpaint) {
      auto mask = DecodeMask(request.mask(), settings);
      if (!mask.ok()) return mask.status();
      params.mask = *std::move(mask);
    }
  }

  // Seeds are fixed here so that the started event can name them.
  const int images = params.batch_size * params.n_iter;
  const engine::JobSeeds seeds = engine::AllSeeds(params.seed, params.subseed, params.subseed_strength, images);
  params.seed = seeds.seeds[0];
  params.subseed = seeds.subseeds[0];
  context.Started(seeds.seeds, seeds.subseeds, images);

  // Plugins.
  auto args = PluginArgsJson(request);
  if (!args.ok()) return args.status();
  host::JobHookInfo info;
  info.job_id = context.job_id();
  info.img2img = img2img;
  info.width = params.width;
  info.height = params.height;
  info.batch_size = params.batch_size;
  info.n_iter = params.n_iter;
  info.steps = params.sampling.steps;
  info.seed = params.seed;
  info.cfg_scale = static_cast<float>(params.sampling.cfg_scale);
  info.denoising_strength = static_cast<float>(params.sampling.denoising_strength);
  info.prompt = params.prompt;
  info.negative_prompt = params.negative_prompt;
  info.sampler_name = params.sampling.choice.sampler->name;
  info.scheduler = engine::SchedulerName(params.sampling.choice.scheduler);
  auto hooks_or = host::JobHooks::Begin(plugins_, &context, info, *args);
  if (!hooks_or.ok()) return hooks_or.status();
  std::unique_ptr<host::JobHooks> hooks = *std::move(hooks_or);
  HookBridge bridge(*hooks);
  const bool sampler_hooks = hooks->HasCfgHooks() || hooks->HasUnetResiduals() || hooks->HasUnetBlock();
  const bool collect_frames = hooks->HasPostprocessFrames() || hooks->HasExport();

  // Previews.
  const engine::Taesd* taesd = nullptr;
  if (settings.preview.method == engine::PreviewMethod::kTaesd) {
    auto decoder = TaesdDecoder();
    if (!decoder.ok()) return decoder.status();
    taesd = *decoder;
  }
  const engine::LatentPreviewer previewer(&pipeline.vae(), pipeline.weights().config.scale_factor, taesd,
                                          absl::FailedPreconditionError("no TAESD decoder"));
  engine::ImageEncodeOptions preview_encoding;
  preview_encoding.format = settings.preview.format;
  preview_encoding.quality = 80;
  double preview_seconds = 0;

  std::string pass = img2img ? "img2img" : "txt2img";
  const bool hires = params.hires.enabled;
  int batch_no = 0;
  absl::Status hook_error;
  engine::GenerationControl control;
  control.batch_started = [&batch_no](int batch, int) { batch_no = batch; };
  control.pass_started = [&pass](const char* name) { pass = name; };
  control.interrupt = [&context] { return context.ShouldStop(); };
  control.skip = [&context] { return context.TakeSkip(); };
  control.timing = [&context](const char* stage, double seconds) { context.AddTiming(stage, seconds); };
  if (sampler_hooks) {
    control.hooks = &bridge;
    control.unet_hooks = (hooks->HasUnetResiduals() || hooks->HasUnetBlock()) ? &bridge : nullptr;
  }
  control.progress = [&](const engine::SamplingProgress& p) {
    const int step = p.step + 1;
    v1::Progress progress;
    progress.set_job_no(batch_no);
    progress.set_job_count(params.n_iter);
    progress.set_sampling_step(step);
    progress.set_sampling_steps(p.total_steps);
    // With hires fix each batch is two passes, as WebUI's job count doubles.
    const double within = static_cast<double>(step) / std::max(1, p.total_steps);
    const double batch_part = !hires ? within : pass == "hires" ? 0.5 + 0.5 * within : 0.5 * within;
    progress.set_progress(static_cast<float>((batch_no + batch_part) / params.n_iter));
    progress.set_pass(pass);
    const int every = settings.preview.every_n_steps;  // -1: only a batch's last step
    const bool due = every <= 0 ? step == p.total_steps : (step % every == 0 || step == p.total_steps);
    if (settings.preview.method != engine::PreviewMethod::kNone && due && p.preview != nullptr) {
      const auto start = std::chrono::steady_clock::now();
      auto rendered = previewer.Render(settings.preview.method, *p.preview);
      if (rendered.ok()) {
        auto image = EncodeForClient(Bounded(Grid(*rendered), settings.preview.max_size), preview_encoding);
        if (image.ok()) *progress.mutable_preview() = *std::move(image);
      } else {
        LogWarning(absl::StrCat("job ", context.job_id(), ": preview failed: ", rendered.status().message()));
      }
      preview_seconds += SecondsSince(start);
    }
    context.Progress(std::move(progress));
  };

  // Results: encoded with the infotext and sent as each batch finishes, or all at the end when plugins
  // post-process the frames.
  engine::ImageEncodeOptions output;
  output.format = settings.output.format;
  output.quality = settings.output.quality;
  double save_seconds = 0;
  std::vector<engine::GeneratedImage> kept;
  auto infotext_of = [&](const engine::GeneratedImage& image) {
    return engine::CreateInfotext(engine::GenerationInfotext(pipeline, params, image, image.eta));
  };
  auto send = [&](const engine::GeneratedImage& image, const at::Tensor& rgb,
                  const std::string& infotext) -> absl::Status {
    const auto start = std::chrono::steady_clock::now();
    output.infotext = settings.output.omit_infotext ? std::string() : infotext;
    auto encoded = EncodeForClient(rgb, output);
    if (!encoded.ok()) return encoded.status();
    v1::Result result;
    result.set_index(image.index);
    *result.mutable_image() = *std::move(encoded);
    result.set_infotext(infotext);
    result.set_seed(image.seed);
    result.set_subseed(image.subseed);
    result.set_interrupted(image.interrupted);
    save_seconds += SecondsSince(start);
    return context.Result(std::move(result));
  };
  control.image_ready = [&](const engine::GeneratedImage& image) -> absl::Status {
    if (collect_frames) {
      kept.push_back(image);
      return absl::OkStatus();
    }
    return send(image, image.rgb, infotext_of(image));
  };

  auto generated = engine::Generate(pipeline, params, control);
  if (preview_seconds > 0) context.AddTiming("preview", preview_seconds);
  if (!generated.ok()) return generated.status();

  if (collect_frames && !kept.empty()) {
    StageTimer timer(context, "postprocess");
    at::Tensor frames;
    try {
      std::vector<at::Tensor> rgb;
      for (const auto& image : kept) rgb.push_back(image.rgb);
      frames = at::stack(rgb).permute({0, 3, 1, 2}).to(at::kFloat).div(255.0).contiguous();
    } catch (const std::exception& e) {
      return engine::StatusFromException(e, "collecting the frames");
    }
    if (hooks->HasPostprocessFrames()) {
      if (absl::Status st = hooks->PostprocessFrames(frames); !st.ok()) return st;
    }
    std::vector<std::string> infotexts;
    for (int64_t i = 0; i < frames.size(0); ++i) {
      // Plugins may change the frame count: extra frames take the last image's seed and settings.
      engine::GeneratedImage image = kept[std::min<size_t>(static_cast<size_t>(i), kept.size() - 1)];
      image.index = static_cast<int>(i);
      at::Tensor rgb;
      try {
        rgb = frames[i].mul(255.0).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
      } catch (const std::exception& e) {
        return engine::StatusFromException(e, "converting a post-processed frame");
      }
      infotexts.push_back(infotext_of(image));
      if (absl::Status st = send(image, rgb, infotexts.back()); !st.ok()) return st;
    }
    if (hooks->HasExport()) {
      if (absl::Status st = hooks->ExportMedia(frames, infotexts); !st.ok()) return st;
    }
  }
  if (save_seconds > 0) context.AddTiming("save", save_seconds);
  if (context.ShouldStop()) return absl::CancelledError("cancelled; the last prediction was returned");
  return absl::OkStatus();
}

}  // namespace atelier::server
