#include "engine/sd_pipeline.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/latent_preview.h"
#include "engine/nn_util.h"

namespace atelier::engine {
namespace {

// Reports a stage's wall time to control.timing when it ends.
class StageClock {
 public:
  StageClock(const GenerationControl& control, const char* stage)
      : control_(control), stage_(stage), start_(std::chrono::steady_clock::now()) {}
  ~StageClock() {
    if (control_.timing) {
      control_.timing(stage_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
  }

 private:
  const GenerationControl& control_;
  const char* stage_;
  std::chrono::steady_clock::time_point start_;
};

ScheduledCond ToScheduled(const std::vector<ScheduledConditioning>& schedule) {
  ScheduledCond out;
  for (const auto& entry : schedule) {
    out.end_at_step.push_back(entry.end_at_step);
    out.tensors.push_back(entry.cond);
  }
  return out;
}

absl::Status ValidateParams(const GenerationParams& p) {
  if (absl::Status st = CheckImageSize(p.width, p.height); !st.ok()) return st;
  if (p.batch_size < 1 || p.n_iter < 1 || static_cast<int64_t>(p.batch_size) * p.n_iter > p.max_images) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size (", p.batch_size, ") and n_iter (", p.n_iter,
                                                   ") must be >= 1 and make at most ", p.max_images, " images"));
  }
  if (p.init_image.defined()) {
    const at::Tensor& image = p.init_image;
    if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != at::kByte) {
      return absl::InvalidArgumentError("the init image must be 8-bit RGB [height, width, 3]");
    }
    if (p.latent_upscale) {
      if (absl::Status st = CheckImageSize(image.size(1), image.size(0)); !st.ok()) return st;
    } else if (image.size(0) != p.height || image.size(1) != p.width) {
      return absl::InvalidArgumentError(absl::StrCat("the init image is ", image.size(1), "x", image.size(0),
                                                     ", not the job's ", p.width, "x", p.height,
                                                     " (resize it with ResizeInitImage)"));
    }
  }
  return ValidateSamplingSettings(p.sampling);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Sd1Pipeline>> Sd1Pipeline::Create(std::shared_ptr<const Sd1Weights> weights,
                                                                  const ClipTokenizer& tokenizer,
                                                                  const EmbeddingDatabase* embeddings) {
  std::unique_ptr<Sd1Pipeline> p(new Sd1Pipeline());
  p->weights_ = std::move(weights);
  const Sd1Weights& w = *p->weights_;
  auto clip = ClipTextModel::Create(w.config.clip, w.text_encoder);
  if (!clip.ok()) return clip.status();
  p->clip_ = *std::move(clip);
  p->text_ = std::make_unique<TextConditioner>(tokenizer, *p->clip_, embeddings);
  auto unet = UNet::Create(w.config.unet, w.unet);
  if (!unet.ok()) return unet.status();
  p->unet_ = *std::move(unet);
  auto vae = Vae::Create(w.config.vae, w.vae);
  if (!vae.ok()) return vae.status();
  p->vae_ = *std::move(vae);
  try {
    p->device_ = at::Device(w.device.empty() ? std::string("cpu") : w.device);
    p->schedule_ = std::make_unique<ModelSchedule>(w.alphas_cumprod.to(at::kCPU, at::kFloat));
  } catch (const std::exception& e) {
    return StatusFromException(e, "building the noise schedule");
  }
  return p;
}

InfotextFields GenerationInfotext(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                  const GeneratedImage& image, double eta) {
  return GenerationInfotext(pipeline.weights(), params, image, eta);
}

InfotextFields GenerationInfotext(const Sd1Weights& w, const GenerationParams& params, const GeneratedImage& image,
                                  double eta) {
  const SamplerInfo& sampler = *params.sampling.choice.sampler;
  InfotextFields f;
  f.prompt = params.prompt;
  f.negative_prompt = params.negative_prompt;
  f.steps = params.sampling.steps;
  f.sampler = sampler.name;
  const auto scheduler = EffectiveScheduler(params.sampling.choice);
  f.schedule_type = scheduler ? SchedulerLabel(*scheduler) : "Automatic";
  f.cfg_scale = params.sampling.cfg_scale;
  f.seed = image.seed;
  f.width = params.width;
  f.height = params.height;
  f.model_hash = w.sha256.substr(0, 10);
  f.model = std::filesystem::path(w.filename).stem().string();
  if (w.vae_source != "checkpoint") f.vae = std::filesystem::path(w.vae_source).filename().string();
  f.subseed = image.subseed;
  f.subseed_strength = params.subseed_strength;
  f.seed_resize_from_w = params.seed_resize_from_w;
  f.seed_resize_from_h = params.seed_resize_from_h;
  f.img2img = params.init_image.defined();
  f.denoising_strength = params.sampling.denoising_strength;
  f.clip_skip = params.text.clip_skip;
  f.eta_noise_seed_delta = params.eta_noise_seed_delta;
  f.sampler_uses_ensd = sampler.uses_ensd;
  f.eta = eta;
  f.rng = NoiseSourceName(params.noise_source);
  // img2img's init() records the noise multiplier before the sampler records eta (extra_generation_params order).
  if (f.img2img && params.initial_noise_multiplier != 1.0) {
    f.extra.emplace_back("Noise multiplier", PythonFloat(params.initial_noise_multiplier));
  }
  // WebUI records eta when it differs from the option's default (eta_ancestral 1.0 / eta_ddim 0.0).
  const double eta_default = sampler.timesteps ? 0.0 : 1.0;
  if (sampler.takes_eta && eta != eta_default) f.extra.emplace_back(sampler.timesteps ? "Eta DDIM" : "Eta", PythonFloat(eta));
  // The text encoder's note, merged after sampling: a non-default emphasis mode when a prompt uses brackets.
  const Emphasis emphasis = params.text.chunking.emphasis;
  const auto brackets = [](const std::string& t) { return t.find_first_of("([") != std::string::npos; };
  if (emphasis != Emphasis::kOriginal && (brackets(params.prompt) || brackets(params.negative_prompt))) {
    f.extra.emplace_back("Emphasis", emphasis == Emphasis::kNone     ? "None"
                                     : emphasis == Emphasis::kIgnore ? "Ignore"
                                                                     : "No norm");
  }
  return f;
}

absl::StatusOr<at::Tensor> EncodeInitImage(const Sd1Pipeline& pipeline, const at::Tensor& image_uint8,
                                           const at::Tensor& posterior_noise) {
  try {
    const at::Tensor image =
        (image_uint8.to(at::kFloat) / 255.0).permute({2, 0, 1}).unsqueeze(0).mul(2).sub(1).to(pipeline.device());
    auto posterior = pipeline.vae().Encode(image);
    if (!posterior.ok()) return posterior.status();
    return posterior->Sample(posterior_noise.to(posterior->mean.device())) * pipeline.weights().config.scale_factor;
  } catch (const std::exception& e) {
    return StatusFromException(e, "encoding the init image");
  }
}

absl::StatusOr<GenerationResult> Generate(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                          const GenerationControl& control) {
  if (absl::Status st = ValidateParams(params); !st.ok()) return st;
  const int images = params.batch_size * params.n_iter;
  const JobSeeds seeds = AllSeeds(params.seed, params.subseed, params.subseed_strength, images);
  // Prompt-editing schedules count denoiser calls: second-order samplers make two per step.
  const int schedule_steps = params.sampling.steps * (params.sampling.choice.sampler->second_order ? 2 : 1);
  const at::Device device = pipeline.device();

  // Every batch has the same prompts: condition them once (WebUI caches them across batches too).
  const std::vector<std::string> prompts(params.batch_size, params.prompt);
  const std::vector<std::string> negatives(params.batch_size, params.negative_prompt);
  std::optional<StageClock> text_clock(std::in_place, control, "text");
  auto cond = GetMulticondLearnedConditioning(pipeline.text(), prompts, schedule_steps, params.text);
  if (!cond.ok()) return cond.status();
  auto uncond = GetLearnedConditioning(pipeline.text(), negatives, schedule_steps, params.text);
  if (!uncond.ok()) return uncond.status();
  text_clock.reset();
  CfgConditioning conditioning;
  for (int i = 0; i < params.batch_size; ++i) {
    std::vector<WeightedCond> parts;
    for (const auto& part : cond->batch[i]) parts.push_back({ToScheduled(cond->schedules[part.schedule]), part.weight});
    conditioning.cond.push_back(std::move(parts));
    conditioning.uncond.push_back(ToScheduled((*uncond)[i]));
  }

  GenerationResult result;
  const bool img2img = params.init_image.defined();
  if (img2img) {
    StageClock clock(control, "encode");
    at::Tensor eps = params.posterior_noise;
    if (!eps.defined()) {
      auto gen = CreateNoiseGenerator(NoiseSource::kCpu, static_cast<uint64_t>(seeds.seeds[0]), at::kCPU);
      if (!gen.ok()) return gen.status();
      eps = (*gen)->Randn({1, 4, params.init_image.size(0) / 8, params.init_image.size(1) / 8});
    }
    auto init = EncodeInitImage(pipeline, params.init_image, eps);
    if (!init.ok()) return init.status();
    result.init_latent = *init;
    if (params.latent_upscale) {
      try {
        result.init_latent = at::upsample_bilinear2d(result.init_latent, {params.height / 8, params.width / 8},
                                                     /*align_corners=*/false);
      } catch (const std::exception& e) {
        return StatusFromException(e, "resizing the init latent");
      }
    }
  }
  for (int batch = 0; batch < params.n_iter; ++batch) {
    if (control.interrupt && control.interrupt()) {
      result.interrupted = true;
      break;
    }
    if (control.batch_started) control.batch_started(batch, params.n_iter);
    SamplingInputs in;
    in.conditioning = conditioning;

    NoiseOptions noise;
    noise.shape = {4, params.height / 8, params.width / 8};
    const auto first = seeds.seeds.begin() + batch * params.batch_size;
    const auto first_sub = seeds.subseeds.begin() + batch * params.batch_size;
    noise.seeds.assign(first, first + params.batch_size);
    noise.subseeds.assign(first_sub, first_sub + params.batch_size);
    noise.subseed_strength = params.subseed_strength;
    noise.seed_resize_from_w = params.seed_resize_from_w;
    noise.seed_resize_from_h = params.seed_resize_from_h;
    noise.eta_noise_seed_delta = params.eta_noise_seed_delta;
    noise.source = params.noise_source;
    noise.device = device;
    auto rng = ImageRng::Create(noise);
    if (!rng.ok()) return rng.status();
    auto x = rng->First();
    if (!x.ok()) return x.status();

    const UNet& unet = pipeline.unet();
    UNetCallHooks* unet_hooks = control.unet_hooks;
    in.model = [&unet, unet_hooks](const at::Tensor& xs, const at::Tensor& t,
                                   const at::Tensor& ctx) -> absl::StatusOr<at::Tensor> {
      if (unet_hooks == nullptr) return unet.Forward(xs, t, ctx);
      std::array<at::Tensor, kUNetResiduals> residuals;
      UNetCallOptions options;
      if (absl::Status st = unet_hooks->Prepare(xs, t, ctx, residuals, options); !st.ok()) return st;
      return unet.Forward(xs, t, ctx, options);
    };
    in.noise = img2img && params.initial_noise_multiplier != 1.0 ? *x * params.initial_noise_multiplier : *x;
    in.step_noise = StepNoiseFrom(&*rng);
    in.seeds.assign(noise.seeds.begin(), noise.seeds.end());
    bool skipped = false;  // latched: a skip request is consumed once
    in.interrupt = [&control, &skipped] {
      if (skipped) return true;
      if (control.skip && control.skip()) return skipped = true;
      return control.interrupt && control.interrupt();
    };
    in.hooks = control.hooks;
    in.progress = control.progress;
    if (img2img) in.init_latent = result.init_latent.expand({params.batch_size, -1, -1, -1}).contiguous();
    std::optional<StageClock> sampling_clock(std::in_place, control, "sampling");
    auto sampled = Sample(params.sampling, pipeline.schedule(), std::move(in));
    if (!sampled.ok()) return sampled.status();
    sampling_clock.reset();
    result.eta = sampled->eta;

    std::optional<StageClock> decode_clock(std::in_place, control, "decode");
    auto decoded = pipeline.vae().Decode(sampled->latent / pipeline.weights().config.scale_factor);
    if (!decoded.ok()) return decoded.status();
    const at::Tensor rgb = WebUiToUint8(*decoded).to(at::kCPU);
    decode_clock.reset();
    for (int i = 0; i < params.batch_size; ++i) {
      const int index = batch * params.batch_size + i;
      result.images.push_back(
          {rgb[i], sampled->latent[i], seeds.seeds[index], seeds.subseeds[index], index, sampled->interrupted,
           sampled->eta});
      if (control.image_ready) {
        if (absl::Status st = control.image_ready(result.images.back()); !st.ok()) return st;
      }
    }
    if (sampled->interrupted) {
      if (!skipped) {
        result.interrupted = true;
        break;
      }
      ++result.skipped_batches;
    }
  }
  return result;
}

}  // namespace atelier::engine
