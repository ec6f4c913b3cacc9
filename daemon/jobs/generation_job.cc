#include "jobs/generation_job.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/nn_util.h"
#include "engine/pipeline/generate.h"
#include "engine/pipeline/generation_infotext.h"
#include "engine/pipeline/hires_fix.h"
#include "engine/pipeline/infotext.h"
#include "host/job_hooks.h"
#include "jobs/job_inputs.h"
#include "engine/text/text_conditioning.h"
#include "engine/text/prompt_parser.h"
#include "jobs/job_loras.h"
#include "jobs/job_ti_hashes.h"
#include "jobs/live_preview.h"
#include "util/limits.h"
#include "util/log.h"

namespace atelier::jobs {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

at::Tensor ToFloatChw(const at::Tensor& rgb) { return rgb.permute({2, 0, 1}).to(at::kFloat).div(255.0).contiguous(); }
at::Tensor ToUint8Hwc(const at::Tensor& chw) {
  return chw.mul(255.0).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
}

// What plugins see of the job in `process`.
host::JobHookInfo HookInfo(const JobEvents& events, const engine::GenerationParams& params,
                           const engine::Sd1Pipeline& pipeline, const JobSettings& settings) {
  host::JobHookInfo info;
  info.job_id = events.job_id();
  info.img2img = params.init_image.defined();
  info.width = params.width;
  info.height = params.height;
  info.batch_size = params.batch_size;
  info.n_iter = params.n_iter;
  info.steps = params.sampling.steps;
  info.seed = params.seed;
  info.subseed = params.subseed;
  info.subseed_strength = params.subseed_strength;
  info.cfg_scale = params.sampling.cfg_scale;
  info.denoising_strength = params.sampling.denoising_strength;
  info.prompt = params.prompt;
  info.negative_prompt = params.negative_prompt;
  info.sampler_name = params.sampling.choice.sampler->name;
  info.scheduler = engine::SchedulerName(params.sampling.choice.scheduler);
  info.clip_skip = params.text.clip_skip;
  if (params.hires.enabled) {
    auto target = engine::HiresTargetSize(params.width, params.height, params.hires, kMaxImageSide);
    if (target.ok()) {
      info.hires = true;
      info.hires_width = target->width;
      info.hires_height = target->height;
    }
  }
  info.init_image = params.init_image;
  info.mask = params.mask;
  info.inpaint_full_res = settings.inpaint && params.inpaint.full_res;
  info.checkpoint_title = pipeline.weights().title;
  info.resize_mode = info.img2img ? static_cast<int>(params.resize_mode) : 0;
  // The posterior mean (sd-webui-controlnet samples it; the mean keeps jobs reproducible).
  const engine::Sd1Pipeline* p = &pipeline;
  info.vae_encode = [p](const at::Tensor& image) -> absl::StatusOr<at::Tensor> {
    auto posterior = p->vae().Encode(image.to(p->device()).mul(2).sub(1));
    if (!posterior.ok()) return posterior.status();
    return posterior->mean * p->weights().config.scale_factor;
  };
  const engine::ConditioningOptions text_options = params.text;
  info.text_condition = [p, text_options](const std::string& prompt) -> absl::StatusOr<at::Tensor> {
    auto schedules = engine::GetLearnedConditioning(p->text(), {engine::StripExtraNetworkTags(prompt)}, 1, text_options);
    if (!schedules.ok()) return schedules.status();
    return (*schedules)[0].front().cond;
  };
  return info;
}

// Sends a finished frame to the client: encoded with its infotext, numbered in order of delivery.
class ResultSender {
 public:
  ResultSender(const OutputSettings& output, JobEvents& events) : events_(events) {
    options_.format = output.format;
    options_.quality = output.quality;
    omit_infotext_ = output.omit_infotext;
  }
  absl::Status Send(const host::JobFrame& frame) {
    const auto start = std::chrono::steady_clock::now();
    at::Tensor rgb;
    try {
      rgb = ToUint8Hwc(frame.image);
    } catch (const std::exception& e) {
      return engine::StatusFromException(e, "converting a frame");
    }
    options_.infotext = omit_infotext_ ? std::string() : frame.infotext;
    auto encoded = EncodeRgb(rgb, options_);
    if (!encoded.ok()) return encoded.status();
    ResultEvent result;
    result.index = next_index_++;
    result.image = *std::move(encoded);
    result.infotext = frame.infotext;
    result.seed = frame.seed;
    result.subseed = frame.subseed;
    result.interrupted = frame.interrupted;
    seconds_ += SecondsSince(start);
    return events_.Result(std::move(result));
  }
  double seconds() const { return seconds_; }

 private:
  JobEvents& events_;
  engine::ImageEncodeOptions options_;
  bool omit_infotext_ = false;
  int next_index_ = 0;
  double seconds_ = 0;
};

// The 1.0 whole-job frame hooks (postprocess_frames, export_media): every frame at the job's end. Frames past the
// job's images (a plugin added some) take the last image's seed and infotext.
absl::Status RunWholeJobHooks(host::JobHooks& hooks, const std::vector<host::JobFrame>& kept, ResultSender& sender,
                              const StageReport& timing) {
  StageTimer timer(timing, "postprocess");
  at::Tensor frames;
  try {
    std::vector<at::Tensor> images;
    for (const auto& f : kept) images.push_back(f.image);
    frames = at::stack(images).contiguous();
  } catch (const std::exception& e) {
    return engine::StatusFromException(e, "collecting the frames");
  }
  if (hooks.HasPostprocessFrames()) {
    if (absl::Status st = hooks.PostprocessFrames(frames); !st.ok()) return st;
  }
  std::vector<std::string> infotexts;
  for (int64_t i = 0; i < frames.size(0); ++i) {
    host::JobFrame frame = kept[std::min<size_t>(static_cast<size_t>(i), kept.size() - 1)];
    frame.index = static_cast<int>(i);
    frame.image = frames[i];
    infotexts.push_back(frame.infotext);
    if (absl::Status st = sender.Send(frame); !st.ok()) return st;
  }
  if (hooks.HasExport()) return hooks.ExportMedia(frames, infotexts);
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGenerationJob(PipelineCache& pipelines, const host::PluginRegistry& plugins,
                              const JobSettings& settings, const std::string& init_image, const std::string& mask,
                              JobEvents& events) {
  const StageReport timing = [&events](const std::string& stage, double seconds) {
    events.AddTiming(stage, seconds);
  };
  if (!settings.ignored_settings.empty()) {
    LogDebug(absl::StrCat("job ", events.job_id(), ": override_settings not used by atelierd: ",
                          absl::StrJoin(settings.ignored_settings, ", ")));
  }
  auto pipeline_or = pipelines.PipelineFor(settings.checkpoint, settings.vae, timing);
  if (!pipeline_or.ok()) return pipeline_or.status();
  const engine::Sd1Pipeline& pipeline = **pipeline_or;
  // The prompts' <lora:...> networks, on the pipeline for this job only (taken off when `loras` goes). The pipeline
  // is the cache's, used by this executor thread alone; patching it is the one change a job makes to it.
  std::vector<std::string> lora_warnings;
  const auto lora_start = std::chrono::steady_clock::now();
  auto loras = JobLoras::Apply(const_cast<engine::Sd1Pipeline&>(pipeline), pipelines.models().loras(),
                               pipelines.lora_cache(), {settings.params.prompt, settings.params.hires.prompt},
                               settings.lora_missing_warn, &lora_warnings);
  if (!loras.ok()) return loras.status();
  for (const auto& w : lora_warnings) events.Warn(w);
  // "lora (cached)": the same networks as the last LoRA job, swapped in without computing anything.
  if (*loras != nullptr) events.AddTiming((*loras)->reused() ? "lora (cached)" : "lora", SecondsSince(lora_start));

  engine::GenerationParams params = settings.params;
  if (*loras != nullptr && settings.lora_hashes_infotext && !(*loras)->hashes_infotext().empty()) {
    params.extra_infotext.emplace_back("Lora hashes", (*loras)->hashes_infotext());
  }
  if (params.hires.enabled && !engine::FindHiresUpscaler(params.hires.upscaler).ok()) {
    auto entry = engine::UpscalerCatalog(pipelines.models().folders()).Find(params.hires.upscaler, "hr_upscaler");
    if (!entry.ok()) return entry.status();
    StageTimer clock(timing, "load upscaler");
    auto model = pipelines.upscaler_models().Get(*entry, settings.upscaler_tiles, pipeline.device());
    if (!model.ok()) return model.status();
    params.hires.model = *std::move(model);
  }
  if (settings.ti_hashes_infotext) {
    const std::string ti = TiHashes(pipeline.text(), params.text, params.prompt, params.negative_prompt, pipelines.models());
    if (!ti.empty()) params.extra_infotext.emplace_back("TI hashes", ti);
  }
  if (settings.img2img) {
    auto image = DecodeInitImage(init_image, settings);
    if (!image.ok()) return image.status();
    params.init_image = *std::move(image);
    if (settings.inpaint) {
      auto decoded = DecodeMask(mask, settings);
      if (!decoded.ok()) return decoded.status();
      params.mask = *std::move(decoded);
    }
  }
  // The first seed and variation seed are fixed once (-1 draws them); the engine derives every image's from them.
  const engine::JobSeeds first = engine::AllSeeds(params.seed, params.subseed, params.subseed_strength, 1);
  params.seed = first.seeds[0];
  params.subseed = first.subseeds[0];

  host::JobHookInfo hook_info = HookInfo(events, params, pipeline, settings);
  if (*loras != nullptr) hook_info.loras_json = (*loras)->networks_json();
  auto hooks_or = host::JobHooks::Begin(plugins, &events, hook_info, settings.plugin_args);
  if (!hooks_or.ok()) return hooks_or.status();
  std::unique_ptr<host::JobHooks> hooks = *std::move(hooks_or);
  const bool whole_job = hooks->HasPostprocessFrames() || hooks->HasExport();

  const engine::Taesd* taesd = nullptr;
  if (settings.preview.method == engine::PreviewMethod::kTaesd) {
    auto decoder = pipelines.TaesdDecoder();
    if (!decoder.ok()) return decoder.status();
    taesd = *decoder;
  }
  const LivePreview preview(settings.preview, pipeline, taesd);
  double preview_seconds = 0;

  engine::GenerationControl control;
  control.extension = hooks.get();
  control.timing = timing;
  control.interrupt = [&events] { return events.ShouldStop(); };
  control.skip = [&events] { return events.TakeSkip(); };
  control.abandoned = [&events] { return events.Abandoned(); };
  int batch_no = 0, batches = 1;
  engine::SamplingPass pass = settings.img2img ? engine::SamplingPass::kImg2Img : engine::SamplingPass::kTxt2Img;
  const bool hires = params.hires.enabled;
  control.batch_started = [&](int batch, int count) {
    batch_no = batch;
    batches = count;
  };
  control.pass_started = [&pass](const engine::PassInfo& info) { pass = info.pass; };
  control.progress = [&](const engine::SamplingProgress& p) {
    const int step = p.step + 1;
    ProgressEvent progress;
    progress.job_no = batch_no;
    progress.job_count = batches;
    progress.sampling_step = step;
    progress.sampling_steps = p.total_steps;
    // With hires fix each batch is two passes, as WebUI's job count doubles.
    const double within = static_cast<double>(step) / std::max(1, p.total_steps);
    const double part = !hires ? within : pass == engine::SamplingPass::kHires ? 0.5 + 0.5 * within : 0.5 * within;
    progress.progress = (batch_no + part) / batches;
    progress.pass = engine::SamplingPassName(pass);
    if (p.preview != nullptr && preview.Due(step, p.total_steps)) {
      const auto start = std::chrono::steady_clock::now();
      engine::StopScope stop_scope([&events] { return events.ShouldStop(); });  // a full-VAE preview stops too
      auto image = preview.Render(*p.preview);
      if (image.ok()) {
        progress.preview = *std::move(image);
      } else {
        LogWarning(absl::StrCat("job ", events.job_id(), ": preview failed: ", image.status().message()));
      }
      preview_seconds += SecondsSince(start);
    }
    events.Progress(std::move(progress));
  };

  auto plan = engine::PrepareGeneration(pipeline, params, control);
  if (!plan.ok()) return plan.status();
  events.Started(plan->seeds.seeds, plan->seeds.subseeds, static_cast<int>(plan->seeds.seeds.size()));

  // Every image leaves as soon as it is decoded, through the plugins' frame hooks; when a plugin has the 1.0
  // whole-job hooks (postprocess_frames, export_media), what leaves the frame hooks is kept for them instead.
  ResultSender sender(settings.output, events);
  std::vector<host::JobFrame> kept;
  // Where frames leave the streamed plugin chain: the client, or the 1.0 whole-job hooks when a plugin has them.
  const host::FrameSink send = [&sender, &kept, whole_job](const host::JobFrame& frame) -> absl::Status {
    if (!whole_job) return sender.Send(frame);
    kept.push_back(frame);
    return absl::OkStatus();
  };
  double postprocess_seconds = 0;
  control.image_ready = [&](const engine::GeneratedImage& image) -> absl::Status {
    host::JobFrame frame;
    frame.index = image.index;
    frame.seed = image.seed;
    frame.subseed = image.subseed;
    frame.interrupted = image.interrupted;
    frame.infotext = engine::CreateInfotext(
        engine::GenerationInfotext(pipeline, plan->params, image, image.eta, hooks.get()));
    try {
      frame.image = ToFloatChw(image.rgb);
    } catch (const std::exception& e) {
      return engine::StatusFromException(e, "converting an image");
    }
    if (!hooks->HasFrameHooks()) return send(frame);
    // The plugins' share of the time is the "postprocess" stage; encoding is "save".
    const double saved_before = sender.seconds();
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = hooks->SendFrame(frame, send);
    postprocess_seconds += SecondsSince(start) - (sender.seconds() - saved_before);
    return status;
  };

  auto generated = engine::RunGeneration(pipeline, *plan, control);
  if (preview_seconds > 0) events.AddTiming("preview", preview_seconds);

  // frames_finish also after an interruption or a failure: buffering plugins flush what they hold.
  if (hooks->HasFrameHooks()) {
    const double saved_before = sender.seconds();
    const auto start = std::chrono::steady_clock::now();
    std::vector<absl::Status> errors;
    hooks->FinishFrames(!generated.ok() || generated->interrupted || events.ShouldStop(), send, errors);
    for (const absl::Status& e : errors) events.Warn(std::string(e.message()));
    postprocess_seconds += SecondsSince(start) - (sender.seconds() - saved_before);
  }
  if (postprocess_seconds > 0) events.AddTiming("postprocess", postprocess_seconds);
  if (!generated.ok()) return generated.status();
  if (whole_job && !kept.empty()) {
    if (absl::Status st = RunWholeJobHooks(*hooks, kept, sender, timing); !st.ok()) return st;
  }
  if (sender.seconds() > 0) events.AddTiming("save", sender.seconds());
  if (events.ShouldStop()) return absl::CancelledError("cancelled; the last prediction was returned");
  return absl::OkStatus();
}

}  // namespace atelier::jobs
