#include "engine/sd_pipeline.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/latent_preview.h"
#include "engine/hires_fix.h"
#include "engine/nn_util.h"
#include "util/limits.h"

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

// The CFG conditioning of a prompt and negative prompt for a batch (prompt-editing schedules over `steps` denoiser
// calls; with hires_steps, the hires pass's schedules).
absl::StatusOr<CfgConditioning> Condition(const Sd1Pipeline& pipeline, const std::string& prompt,
                                          const std::string& negative, int batch_size, int steps,
                                          std::optional<int> hires_steps, const ConditioningOptions& options) {
  const std::vector<std::string> prompts(batch_size, prompt);
  const std::vector<std::string> negatives(batch_size, negative);
  auto cond = GetMulticondLearnedConditioning(pipeline.text(), prompts, steps, options, hires_steps);
  if (!cond.ok()) return cond.status();
  auto uncond = GetLearnedConditioning(pipeline.text(), negatives, steps, options, hires_steps);
  if (!uncond.ok()) return uncond.status();
  CfgConditioning conditioning;
  for (int i = 0; i < batch_size; ++i) {
    std::vector<WeightedCond> parts;
    for (const auto& part : cond->batch[i]) parts.push_back({ToScheduled(cond->schedules[part.schedule]), part.weight});
    conditioning.cond.push_back(std::move(parts));
    conditioning.uncond.push_back(ToScheduled((*uncond)[i]));
  }
  return conditioning;
}

absl::Status ValidateParams(const GenerationParams& p) {
  if (absl::Status st = CheckImageSize(p.width, p.height); !st.ok()) return st;
  if (p.batch_size < 1 || p.n_iter < 1 || static_cast<int64_t>(p.batch_size) * p.n_iter > p.max_images) {
    return absl::InvalidArgumentError(absl::StrCat("batch_size (", p.batch_size, ") and n_iter (", p.n_iter,
                                                   ") must be >= 1 and make at most ", p.max_images, " images"));
  }
  if (p.init_image.defined() && p.hires.enabled) {
    return absl::InvalidArgumentError("hires fix (enable_hr) is a txt2img feature; img2img takes no enable_hr");
  }
  if (p.init_image.defined()) {
    const at::Tensor& image = p.init_image;
    if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != at::kByte) {
      return absl::InvalidArgumentError("the init image must be 8-bit RGB [height, width, 3]");
    }
    if (p.mask.defined()) {
      if (p.mask.dim() != 2 || p.mask.scalar_type() != at::kByte || image.size(0) < 8 || image.size(1) < 8) {
        return absl::InvalidArgumentError("inpainting needs an 8-bit mask [height, width] and an image of 8x8 or more");
      }
    } else if (p.latent_upscale) {
      if (absl::Status st = CheckImageSize(image.size(1), image.size(0)); !st.ok()) return st;
    } else if (image.size(0) != p.height || image.size(1) != p.width) {
      return absl::InvalidArgumentError(absl::StrCat("the init image is ", image.size(1), "x", image.size(0),
                                                     ", not the job's ", p.width, "x", p.height,
                                                     " (resize it with ResizeInitImage)"));
    }
  }
  return ValidateSamplingSettings(p.sampling);
}

// The first pass's latents [B, 4, h, w] brought to the hires target: a latent upscaler interpolates; an image
// upscaler decodes (8-bit, as WebUI), resizes and encodes again (posterior noise seeded per image). Then the
// overflow of a "Hires resize" to another aspect is cropped, centred.
absl::StatusOr<at::Tensor> HiresUpscale(const Sd1Pipeline& pipeline, const at::Tensor& latent,
                                        const HiresUpscaler& upscaler, const HiresTarget& target,
                                        const std::vector<int64_t>& seeds, const GenerationControl& control) {
  StageClock clock(control, "upscale");
  const int64_t th = target.height / 8, tw = target.width / 8;
  at::Tensor up;
  if (upscaler.kind == HiresUpscaleKind::kLatent) {
    auto scaled = UpscaleLatent(latent, upscaler, th, tw);
    if (!scaled.ok()) return scaled.status();
    up = *scaled;
  } else {
    auto decoded = pipeline.vae().Decode(latent / pipeline.weights().config.scale_factor);
    if (!decoded.ok()) return decoded.status();
    auto images = UpscaleImages(WebUiToUint8(*decoded).to(at::kCPU), upscaler, th * 8, tw * 8);
    if (!images.ok()) return images.status();
    std::vector<at::Tensor> latents;
    for (int64_t i = 0; i < images->size(0); ++i) {
      auto gen = CreateNoiseGenerator(NoiseSource::kCpu, static_cast<uint64_t>(seeds[static_cast<size_t>(i)]), at::kCPU);
      if (!gen.ok()) return gen.status();
      auto encoded = EncodeInitImage(pipeline, (*images)[i], (*gen)->Randn({1, 4, th, tw}));
      if (!encoded.ok()) return encoded.status();
      latents.push_back(*encoded);
    }
    try {
      up = at::cat(latents, 0);
    } catch (const std::exception& e) {
      return StatusFromException(e, "joining the upscaled latents");
    }
  }
  if (target.truncate_x > 0 || target.truncate_y > 0) {
    const int64_t ty = target.truncate_y, tx = target.truncate_x;
    up = up.slice(2, ty / 2, up.size(2) - (ty + 1) / 2).slice(3, tx / 2, up.size(3) - (tx + 1) / 2).contiguous();
  }
  return up;
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
  f.img2img = params.init_image.defined() || params.hires.enabled;  // both print "Denoising strength"
  f.denoising_strength = params.sampling.denoising_strength;
  f.clip_skip = params.text.clip_skip;
  f.eta_noise_seed_delta = params.eta_noise_seed_delta;
  f.sampler_uses_ensd = sampler.uses_ensd;
  f.eta = eta;
  f.rng = NoiseSourceName(params.noise_source);
  // Hires fix's keys, in the order its init() records them.
  if (params.hires.enabled) {
    const HiresFix& hr = params.hires;
    if (hr.sampler_named && hr.sampler && hr.sampler->sampler != params.sampling.choice.sampler) {
      f.extra.emplace_back("Hires sampler", hr.sampler->sampler->name);
    }
    if (!hr.prompt.empty() && hr.prompt != params.prompt) f.extra.emplace_back("Hires prompt", hr.prompt);
    if (!hr.negative_prompt.empty() && hr.negative_prompt != params.negative_prompt) {
      f.extra.emplace_back("Hires negative prompt", hr.negative_prompt);
    }
    if (hr.scheduler_named && hr.sampler) {
      const auto second = EffectiveScheduler(*hr.sampler);
      const std::string label = second ? SchedulerLabel(*second) : "Automatic";
      if (label != f.schedule_type) f.extra.emplace_back("Hires schedule type", label);
    }
    if (hr.resize_x == 0 && hr.resize_y == 0) {
      f.extra.emplace_back("Hires upscale", PythonFloat(hr.scale));
    } else {
      f.extra.emplace_back("Hires resize", absl::StrCat(hr.resize_x, "x", hr.resize_y));
    }
    if (hr.second_pass_steps != 0) f.extra.emplace_back("Hires steps", std::to_string(hr.second_pass_steps));
    if (!hr.upscaler.empty()) f.extra.emplace_back("Hires upscaler", hr.upscaler);
  }
  // Inpainting's keys, in the order img2img's init() records them (API requests).
  if (params.mask.defined() && f.img2img) {
    const InpaintSettings& in = params.inpaint;
    if (in.invert) f.extra.emplace_back("Mask mode", "Inpaint not masked");
    if ((in.blur_x > 0 || in.blur_y > 0) && in.blur_x == in.blur_y) {
      f.extra.emplace_back("Mask blur", std::to_string(in.blur_x));
    }
    // "Only masked" with an empty mask is plain img2img in WebUI: no area, padding or content keys.
    const bool blank = in.full_res && (in.invert ? params.mask.min().item<int>() == 255
                                                 : params.mask.max().item<int>() == 0);
    if (in.full_res && !blank) {
      f.extra.emplace_back("Inpaint area", "Only masked");
      f.extra.emplace_back("Masked area padding", std::to_string(in.padding));
    }
    if (in.fill != InpaintFill::kOriginal && !blank) {
      f.extra.emplace_back("Masked content", InpaintFillName(in.fill));
    }
  }
  if (w.config.unet.in_channels == 9) f.conditional_mask_weight = params.inpaint.mask_weight;
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
  std::optional<StageClock> text_clock(std::in_place, control, "text");
  auto conditioning_or = Condition(pipeline, params.prompt, params.negative_prompt, params.batch_size, schedule_steps,
                                   std::nullopt, params.text);
  if (!conditioning_or.ok()) return conditioning_or.status();
  const CfgConditioning conditioning = *std::move(conditioning_or);

  // Hires fix: the second pass's size, upscaler, sampling settings and prompts' conditioning (WebUI counts their
  // prompt-editing steps from the end of the first pass).
  std::optional<HiresTarget> hr_target;
  HiresUpscaler hr_upscaler;
  SamplingSettings hr_settings = params.sampling;
  CfgConditioning hr_conditioning;
  if (params.hires.enabled) {
    auto target = HiresTargetSize(params.width, params.height, params.hires, kMaxImageSide);
    if (!target.ok()) return target.status();
    hr_target = *target;
    auto upscaler = FindHiresUpscaler(params.hires.upscaler);
    if (!upscaler.ok()) return upscaler.status();
    hr_upscaler = *upscaler;
    if (params.hires.sampler) hr_settings.choice = *params.hires.sampler;
    if (params.hires.second_pass_steps > 0) hr_settings.steps = params.hires.second_pass_steps;
    hr_settings.img2img_fix_steps = true;  // the second pass runs exactly its steps
    if (absl::Status st = ValidateSamplingSettings(hr_settings); !st.ok()) return st;
    const int hr_total = hr_settings.steps * (hr_settings.choice.sampler->second_order ? 2 : 1);
    auto hr_cond = Condition(pipeline, params.hires.prompt.empty() ? params.prompt : params.hires.prompt,
                             params.hires.negative_prompt.empty() ? params.negative_prompt
                                                                  : params.hires.negative_prompt,
                             params.batch_size, schedule_steps, hr_total, params.text);
    if (!hr_cond.ok()) return hr_cond.status();
    hr_conditioning = *std::move(hr_cond);
  }
  text_clock.reset();

  GenerationResult result;
  const bool img2img = params.init_image.defined();
  // Inpainting: the mask, crop, fill and keep-mask WebUI's init() derives; the image to encode is the plan's.
  std::optional<InpaintPlan> inpaint;
  at::Tensor latent_keep;
  at::Tensor to_encode = params.init_image;
  if (img2img && params.mask.defined()) {
    StageClock clock(control, "mask");
    auto plan = PrepareInpainting(params.init_image, params.mask, params.inpaint, params.resize_mode, params.width,
                                  params.height);
    if (!plan.ok()) return plan.status();
    inpaint = *std::move(plan);
    to_encode = inpaint->image;
    if (!inpaint->blank_mask) latent_keep = inpaint->latent_keep.to(device);
  }
  const bool nine_channels = pipeline.unet().config().in_channels == 9;
  if (img2img) {
    StageClock clock(control, "encode");
    at::Tensor eps = params.posterior_noise;
    if (!eps.defined()) {
      auto gen = CreateNoiseGenerator(NoiseSource::kCpu, static_cast<uint64_t>(seeds.seeds[0]), at::kCPU);
      if (!gen.ok()) return gen.status();
      eps = (*gen)->Randn({1, 4, to_encode.size(0) / 8, to_encode.size(1) / 8});
    }
    auto init = EncodeInitImage(pipeline, to_encode, eps);
    if (!init.ok()) return init.status();
    result.init_latent = *init;
    if (params.latent_upscale && !inpaint) {
      try {
        result.init_latent = at::upsample_bilinear2d(result.init_latent, {params.height / 8, params.width / 8},
                                                     /*align_corners=*/false);
      } catch (const std::exception& e) {
        return StatusFromException(e, "resizing the init latent");
      }
    }
    if (latent_keep.defined()) {
      try {
        const InpaintFill fill = params.inpaint.fill;
        if (fill == InpaintFill::kLatentNoise) {
          // Unit noise of the first batch's seeds (WebUI's create_random_tensors) where the mask repaints.
          NoiseOptions fill_noise;
          fill_noise.shape = {4, params.height / 8, params.width / 8};
          fill_noise.seeds.assign(seeds.seeds.begin(), seeds.seeds.begin() + params.batch_size);
          fill_noise.source = params.noise_source;
          fill_noise.device = device;
          auto rng = ImageRng::Create(fill_noise);
          if (!rng.ok()) return rng.status();
          auto n = rng->First();
          if (!n.ok()) return n.status();
          result.init_latent = result.init_latent * latent_keep + *n * (1 - latent_keep);
        } else if (fill == InpaintFill::kLatentNothing) {
          result.init_latent = result.init_latent * latent_keep;
        }
      } catch (const std::exception& e) {
        return StatusFromException(e, "filling the masked latent");
      }
    }
  }
  // 9-channel (inpainting) checkpoints take [mask, masked image latent] with every UNet call.
  at::Tensor image_cond;
  if (nine_channels) {
    StageClock clock(control, "encode");
    auto gen = CreateNoiseGenerator(NoiseSource::kCpu, static_cast<uint64_t>(seeds.seeds[0]) + 1, at::kCPU);
    if (!gen.ok()) return gen.status();
    const bool masked = inpaint && !inpaint->blank_mask;
    auto cond = InpaintingConditioning(pipeline, img2img ? to_encode : at::Tensor(),
                                       masked ? inpaint->image_mask : at::Tensor(), params.inpaint.round,
                                       params.inpaint.mask_weight, params.width, params.height,
                                       (*gen)->Randn({1, 4, params.height / 8, params.width / 8}));
    if (!cond.ok()) return cond.status();
    image_cond = *cond;
  }
  for (int batch = 0; batch < params.n_iter; ++batch) {
    if (control.interrupt && control.interrupt()) {
      result.interrupted = true;
      break;
    }
    if (control.batch_started) control.batch_started(batch, params.n_iter);
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

    bool skipped = false;  // latched: a skip request is consumed once
    // One sampling pass over this batch's images.
    auto sample_pass = [&](const SamplingSettings& settings, const CfgConditioning& cond, ImageRng& pass_rng,
                           const at::Tensor& start_noise, const at::Tensor& init,
                           const at::Tensor& keep) -> absl::StatusOr<SamplingResult> {
      SamplingInputs in;
      in.conditioning = cond;
      if (image_cond.defined()) {
        in.conditioning.image_cond =
            image_cond.size(2) == start_noise.size(2) && image_cond.size(3) == start_noise.size(3)
                ? image_cond.expand({params.batch_size, -1, -1, -1}).contiguous()
                : at::upsample_nearest2d(image_cond, {start_noise.size(2), start_noise.size(3)})
                      .expand({params.batch_size, -1, -1, -1})
                      .contiguous();
      }
      in.latent_keep = keep;  // inpainting's blend: the first pass only (hires is txt2img)
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
      in.noise = start_noise;
      in.step_noise = StepNoiseFrom(&pass_rng);
      in.seeds.assign(noise.seeds.begin(), noise.seeds.end());
      in.interrupt = [&control, &skipped] {
        if (skipped) return true;
        if (control.skip && control.skip()) return skipped = true;
        return control.interrupt && control.interrupt();
      };
      in.hooks = control.hooks;
      in.progress = control.progress;
      in.init_latent = init;
      StageClock sampling_clock(control, "sampling");
      return Sample(settings, pipeline.schedule(), std::move(in));
    };

    if (control.pass_started) control.pass_started(img2img ? "img2img" : "txt2img");
    at::Tensor init;
    if (img2img) init = result.init_latent.expand({params.batch_size, -1, -1, -1}).contiguous();
    auto sampled = sample_pass(params.sampling, conditioning, *rng,
                               img2img && params.initial_noise_multiplier != 1.0
                                   ? *x * params.initial_noise_multiplier
                                   : *x,
                               init, latent_keep);
    if (!sampled.ok()) return sampled.status();
    result.eta = sampled->eta;

    // The hires pass follows unless the job was interrupted; a Skip ended only the first pass (WebUI's nextjob
    // clears it), so every image of the job has the hires size.
    if (hr_target && (!sampled->interrupted || skipped)) {
      skipped = false;
      if (control.pass_started) control.pass_started("hires");
      auto upscaled = HiresUpscale(pipeline, sampled->latent, hr_upscaler, *hr_target, noise.seeds, control);
      if (!upscaled.ok()) return upscaled.status();
      // The second pass's noise: the same seeds (and variation) at the new size.
      NoiseOptions hr_noise = noise;
      hr_noise.shape = {4, upscaled->size(2), upscaled->size(3)};
      auto hr_rng = ImageRng::Create(hr_noise);
      if (!hr_rng.ok()) return hr_rng.status();
      auto hr_x = hr_rng->First();
      if (!hr_x.ok()) return hr_x.status();
      auto second = sample_pass(hr_settings, hr_conditioning, *hr_rng, *hr_x, *upscaled, at::Tensor());
      if (!second.ok()) return second.status();
      sampled = *std::move(second);
    }

    std::optional<StageClock> decode_clock(std::in_place, control, "decode");
    auto decoded = pipeline.vae().Decode(sampled->latent / pipeline.weights().config.scale_factor);
    if (!decoded.ok()) return decoded.status();
    const at::Tensor rgb = WebUiToUint8(*decoded).to(at::kCPU);
    decode_clock.reset();
    for (int i = 0; i < params.batch_size; ++i) {
      const int index = batch * params.batch_size + i;
      // Inpainting: the original laid back over everything outside the mask (pasted into its frame for full res).
      const at::Tensor image = inpaint ? ApplyOverlay(rgb[i], *inpaint) : rgb[i];
      result.images.push_back({image, sampled->latent[i], seeds.seeds[index], seeds.subseeds[index], index,
                               sampled->interrupted, sampled->eta, inpaint ? rgb[i] : at::Tensor()});
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
