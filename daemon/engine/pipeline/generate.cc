#include "engine/pipeline/generate.h"

#include <functional>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/models/cpu_allocator.h"
#include "engine/models/nn_util.h"
#include "engine/pipeline/latent_preview.h"
#include "engine/text/prompt_parser.h"
#include "util/limits.h"

namespace atelier::engine {
namespace {

JobExtension::Points PointsOf(const GenerationControl& control) {
  return control.extension != nullptr ? control.extension->points() : JobExtension::Points{};
}

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
  // WebUI's extra_networks.parse_prompts: <lora:...> and other network tags leave the text CLIP sees (the job layer
  // applies the networks; the infotext keeps the tags).
  const std::vector<std::string> prompts(batch_size, StripExtraNetworkTags(prompt));
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

// The extension's shape of the job, checked like a request.
absl::Status ShapeJob(GenerationPlan& plan, const GenerationControl& control) {
  GenerationParams& p = plan.params;
  plan.shape.batch_size = p.batch_size;
  plan.shape.n_iter = p.n_iter;
  plan.shape.steps = p.sampling.steps;
  plan.shape.width = p.width;
  plan.shape.height = p.height;
  if (!PointsOf(control).shape) return absl::OkStatus();
  JobShape shape = plan.shape;
  if (absl::Status st = control.extension->ShapeJob(shape); !st.ok()) return st;
  if (shape.width != p.width || shape.height != p.height) {
    return absl::InvalidArgumentError("an extension tried to change the image size (only batch, iterations, steps "
                                      "and frames per video can be shaped)");
  }
  if (shape.frames_per_video < 0 || (shape.frames_per_video > 0 && shape.batch_size % shape.frames_per_video != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("frames per video (", shape.frames_per_video,
                                                   ") must divide the batch size (", shape.batch_size, ")"));
  }
  p.batch_size = shape.batch_size;
  p.n_iter = shape.n_iter;
  p.sampling.steps = shape.steps;
  plan.shape = shape;
  if (absl::Status st = ValidateParams(p); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("after the plugins shaped the job: ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status OverrideSchedule(const Sd1Pipeline& pipeline, GenerationPlan& plan, const GenerationControl& control) {
  if (!PointsOf(control).schedule) return absl::OkStatus();
  try {
    const at::Tensor original = pipeline.schedule().alphas_cumprod();
    at::Tensor alphas = original.clone();
    if (absl::Status st = control.extension->OverrideSchedule(alphas); !st.ok()) return st;
    if (alphas.unsafeGetTensorImpl() == original.unsafeGetTensorImpl() || at::equal(alphas.to(original.options()),
                                                                                    original)) {
      return absl::OkStatus();
    }
    if (alphas.dim() != 1 || alphas.numel() != original.numel()) {
      return absl::InvalidArgumentError(absl::StrCat("a replaced noise schedule must have ", original.numel(),
                                                      " alphas_cumprod values, not ", alphas.numel()));
    }
    plan.schedule_override = std::make_shared<ModelSchedule>(alphas.to(at::kCPU, at::kFloat).contiguous());
  } catch (const std::exception& e) {
    return StatusFromException(e, "replacing the noise schedule");
  }
  return absl::OkStatus();
}

absl::Status PrepareHires(const Sd1Pipeline& pipeline, GenerationPlan& plan, int schedule_steps) {
  const GenerationParams& params = plan.params;
  plan.hr_settings = params.sampling;
  if (!params.hires.enabled) return absl::OkStatus();
  // The second pass's size, upscaler, sampling settings and prompts' conditioning (WebUI counts their
  // prompt-editing steps from the end of the first pass).
  auto target = HiresTargetSize(params.width, params.height, params.hires, kMaxImageSide);
  if (!target.ok()) return target.status();
  plan.hr_target = *target;
  if (params.hires.model != nullptr) {
    plan.hr_upscaler = HiresUpscaler{params.hires.upscaler, HiresUpscaleKind::kImage, "model", false, params.hires.model};
  } else {
    auto upscaler = FindHiresUpscaler(params.hires.upscaler);
    if (!upscaler.ok()) return absl::InvalidArgumentError(upscaler.status().message());
    plan.hr_upscaler = *upscaler;
  }
  SamplingSettings& hr = plan.hr_settings;
  if (params.hires.sampler) hr.choice = *params.hires.sampler;
  if (params.hires.second_pass_steps > 0) hr.steps = params.hires.second_pass_steps;
  hr.img2img_fix_steps = true;  // the second pass runs exactly its steps
  if (absl::Status st = ValidateSamplingSettings(hr); !st.ok()) return st;
  const int hr_total = hr.steps * (hr.choice.sampler->second_order ? 2 : 1);
  auto hr_cond = Condition(pipeline, params.hires.prompt.empty() ? params.prompt : params.hires.prompt,
                           params.hires.negative_prompt.empty() ? params.negative_prompt
                                                                : params.hires.negative_prompt,
                           params.batch_size, schedule_steps, hr_total, params.text);
  if (!hr_cond.ok()) return hr_cond.status();
  plan.hr_conditioning = *std::move(hr_cond);
  return absl::OkStatus();
}

// img2img: the mask, crop, fill and keep-mask WebUI's init() derives, and the init latent.
absl::Status PrepareInitLatent(const Sd1Pipeline& pipeline, GenerationPlan& plan, const GenerationControl& control) {
  const GenerationParams& params = plan.params;
  const at::Device device = pipeline.device();
  at::Tensor to_encode = params.init_image;
  if (params.mask.defined()) {
    StageTimer clock(control.timing, "mask");
    auto inpaint = PrepareInpainting(params.init_image, params.mask, params.inpaint, params.resize_mode, params.width,
                                     params.height);
    if (!inpaint.ok()) return inpaint.status();
    plan.inpaint = *std::move(inpaint);
    to_encode = plan.inpaint->image;
    if (!plan.inpaint->blank_mask) plan.latent_keep = plan.inpaint->latent_keep.to(device);
  }
  StageTimer clock(control.timing, "encode");
  at::Tensor eps = params.posterior_noise;
  if (!eps.defined()) {
    auto gen = CreateNoiseGenerator(NoiseSource::kCpu, static_cast<uint64_t>(plan.seeds.seeds[0]), at::kCPU);
    if (!gen.ok()) return gen.status();
    eps = (*gen)->Randn({1, 4, to_encode.size(0) / 8, to_encode.size(1) / 8});
  }
  auto init = EncodeInitImage(pipeline, to_encode, eps);
  if (!init.ok()) return init.status();
  plan.init_latent = *init;
  try {
    if (params.latent_upscale && !plan.inpaint) {
      plan.init_latent = at::upsample_bilinear2d(plan.init_latent, {params.height / 8, params.width / 8},
                                                 /*align_corners=*/false);
    }
    if (plan.latent_keep.defined()) {
      const InpaintFill fill = params.inpaint.fill;
      if (fill == InpaintFill::kLatentNoise) {
        // Unit noise of the first batch's seeds (WebUI's create_random_tensors) where the mask repaints.
        NoiseOptions fill_noise;
        fill_noise.shape = {4, params.height / 8, params.width / 8};
        fill_noise.seeds.assign(plan.seeds.seeds.begin(), plan.seeds.seeds.begin() + params.batch_size);
        fill_noise.source = params.noise_source;
        fill_noise.device = device;
        auto rng = ImageRng::Create(fill_noise);
        if (!rng.ok()) return rng.status();
        auto n = rng->First();
        if (!n.ok()) return n.status();
        plan.init_latent = plan.init_latent * plan.latent_keep + *n * (1 - plan.latent_keep);
      } else if (fill == InpaintFill::kLatentNothing) {
        plan.init_latent = plan.init_latent * plan.latent_keep;
      }
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, "preparing the init latent");
  }
  return absl::OkStatus();
}

// 9-channel (inpainting) checkpoints take [mask, masked image latent] with every UNet call.
absl::Status PrepareImageConditioning(const Sd1Pipeline& pipeline, GenerationPlan& plan,
                                      const GenerationControl& control) {
  const GenerationParams& params = plan.params;
  if (pipeline.unet().config().in_channels != 9) return absl::OkStatus();
  StageTimer clock(control.timing, "encode");
  auto gen = CreateNoiseGenerator(NoiseSource::kCpu, static_cast<uint64_t>(plan.seeds.seeds[0]) + 1, at::kCPU);
  if (!gen.ok()) return gen.status();
  const bool masked = plan.inpaint && !plan.inpaint->blank_mask;
  const at::Tensor image = !plan.img2img ? at::Tensor() : plan.inpaint ? plan.inpaint->image : params.init_image;
  const ImageEncoder encode = [&pipeline](const at::Tensor& pixels, const at::Tensor& eps) {
    return EncodeInitImage(pipeline, pixels, eps);
  };
  auto cond = InpaintingConditioning(encode, image, masked ? plan.inpaint->image_mask : at::Tensor(),
                                     params.inpaint.round, params.inpaint.mask_weight, params.width, params.height,
                                     (*gen)->Randn({1, 4, params.height / 8, params.width / 8}));
  if (!cond.ok()) return cond.status();
  plan.image_cond = *cond;
  return absl::OkStatus();
}

// The first pass's latents [B, 4, h, w] brought to the hires target: a latent upscaler interpolates; an image
// upscaler decodes (8-bit, as WebUI), resizes and encodes again (posterior noise seeded per image). Then the
// overflow of a "Hires resize" to another aspect is cropped, centred.
absl::StatusOr<at::Tensor> HiresUpscale(const Sd1Pipeline& pipeline, const at::Tensor& latent,
                                        const HiresUpscaler& upscaler, const HiresTarget& target,
                                        const std::vector<int64_t>& seeds, const GenerationControl& control) {
  StageTimer clock(control.timing, "upscale");
  StopScope stop_scope(control.interrupt);  // its VAE decode and encode stop with the job
  const int64_t th = target.height / 8, tw = target.width / 8;
  at::Tensor up;
  if (upscaler.kind == HiresUpscaleKind::kLatent) {
    auto scaled = UpscaleLatent(latent, upscaler, th, tw);
    if (!scaled.ok()) return scaled.status();
    up = *scaled;
  } else {
    auto decoded = pipeline.vae().Decode(latent / pipeline.weights().config.scale_factor);
    if (!decoded.ok()) return decoded.status();
    auto images = UpscaleImages(WebUiToUint8(*decoded).to(at::kCPU), upscaler, th * 8, tw * 8, control.interrupt);
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

// One sampling pass over a batch's images.
struct PassInputs {
  const SamplingSettings* settings = nullptr;
  const CfgConditioning* conditioning = nullptr;
  ImageRng* rng = nullptr;
  const NoiseDraw* draw = nullptr;  // the rng as p.rng.next() (extensions' draws)
  at::Tensor noise, init, keep;
  const std::vector<int64_t>* seeds = nullptr;
  PassInfo info;
};

absl::StatusOr<SamplingResult> SamplePass(const Sd1Pipeline& pipeline, const GenerationPlan& plan,
                                          const PassInputs& pass, const GenerationControl& control, bool& skipped) {
  if (PointsOf(control).pass) {
    if (absl::Status st = control.extension->PassStarted(pass.info); !st.ok()) return st;
  }
  if (control.pass_started) control.pass_started(pass.info);
  const int batch_size = plan.params.batch_size;
  SamplingInputs in;
  in.conditioning = *pass.conditioning;
  if (plan.image_cond.defined()) {
    const at::Tensor& ic = plan.image_cond;
    const bool same = ic.size(2) == pass.noise.size(2) && ic.size(3) == pass.noise.size(3);
    in.conditioning.image_cond = (same ? ic : at::upsample_nearest2d(ic, {pass.noise.size(2), pass.noise.size(3)}))
                                     .expand({batch_size, -1, -1, -1})
                                     .contiguous();
  }
  in.latent_keep = pass.keep;
  const UNet& unet = pipeline.unet();
  const int frames_per_video = plan.shape.frames_per_video;
  // Interrupt or Skip: polled before every evaluation and, inside the UNet, between layers and attention blocks.
  const std::function<bool()> stop = [&control, &skipped] {
    if (skipped) return true;
    if (control.skip && control.skip()) return skipped = true;
    return control.interrupt && control.interrupt();
  };
  // The innermost model call: the UNet with what the extension attached to the call.
  in.model = [&unet, frames_per_video, stop](ModelCall& call) -> absl::StatusOr<at::Tensor> {
    StopScope stop_scope(stop);
    UNetCallOptions options;
    for (const at::Tensor& r : call.residuals) {
      if (r.defined()) {
        options.residuals = &call.residuals;
        break;
      }
    }
    options.block_hook = call.block_hook;
    options.attention_hook = call.attention_hook;
    options.block_end_hook = call.block_end_hook;
    options.frames_per_video = call.frames_per_video > 0 ? call.frames_per_video : frames_per_video;
    return unet.Forward(call.x, call.timesteps, call.context, options);
  };
  in.noise = pass.noise;
  in.step_noise = StepNoiseFrom(pass.rng);
  in.seeds.assign(pass.seeds->begin(), pass.seeds->end());
  in.interrupt = stop;
  in.extension = control.extension;
  in.progress = control.progress;
  in.init_latent = pass.init;
  StageTimer clock(control.timing, "sampling");
  if (!PointsOf(control).sample) return Sample(*pass.settings, plan.schedule(pipeline), std::move(in));
  // An extension wraps the pass (FreeInit): each of its calls samples from the noise it gives; the last call's
  // details (sigmas, eta) describe the pass.
  SamplingResult last;
  const SampleNext next = [&](const at::Tensor& noise) -> absl::StatusOr<SampledPass> {
    if (!noise.defined() || noise.sizes() != pass.noise.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("an extension sampled from noise of shape ",
                                                     noise.defined() ? c10::str(noise.sizes()) : "(none)",
                                                     "; the pass's noise is ", c10::str(pass.noise.sizes())));
    }
    SamplingInputs call = in;
    call.noise = noise.to(pass.noise.device(), pass.noise.scalar_type());
    auto result = Sample(*pass.settings, plan.schedule(pipeline), std::move(call));
    if (!result.ok()) return result.status();
    last = *std::move(result);
    return SampledPass{last.latent, last.interrupted};
  };
  auto wrapped = control.extension->Sample(pass.info, pass.noise, plan.schedule(pipeline).alphas_cumprod(), next,
                                           *pass.draw);
  if (!wrapped.ok()) return wrapped.status();
  if (!wrapped->latent.defined() || wrapped->latent.sizes() != pass.noise.sizes()) {
    return absl::InvalidArgumentError("an extension's sample wrapper returned latents of the wrong shape");
  }
  last.latent = wrapped->latent.to(pass.noise.device(), at::kFloat);
  last.interrupted = last.interrupted || wrapped->interrupted;
  return last;
}

}  // namespace

absl::StatusOr<GenerationPlan> PrepareGeneration(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                                 const GenerationControl& control) {
  if (absl::Status st = ValidateParams(params); !st.ok()) return st;
  GenerationPlan plan;
  plan.params = params;
  if (absl::Status st = ShapeJob(plan, control); !st.ok()) return st;
  if (absl::Status st = OverrideSchedule(pipeline, plan, control); !st.ok()) return st;
  const GenerationParams& p = plan.params;
  plan.img2img = p.init_image.defined();
  plan.seeds = AllSeeds(p.seed, p.subseed, p.subseed_strength, p.batch_size * p.n_iter);
  // Prompt-editing schedules count denoiser calls: second-order samplers make two per step.
  const int schedule_steps = p.sampling.steps * (p.sampling.choice.sampler->second_order ? 2 : 1);
  {
    // Every batch has the same prompts: condition them once (WebUI caches them across batches too).
    StageTimer clock(control.timing, "text");
    auto conditioning =
        Condition(pipeline, p.prompt, p.negative_prompt, p.batch_size, schedule_steps, std::nullopt, p.text);
    if (!conditioning.ok()) return conditioning.status();
    plan.conditioning = *std::move(conditioning);
    if (absl::Status st = PrepareHires(pipeline, plan, schedule_steps); !st.ok()) return st;
  }
  if (plan.img2img) {
    if (absl::Status st = PrepareInitLatent(pipeline, plan, control); !st.ok()) return st;
  }
  if (absl::Status st = PrepareImageConditioning(pipeline, plan, control); !st.ok()) return st;
  return plan;
}

absl::StatusOr<BatchLatents> SampleBatch(const Sd1Pipeline& pipeline, const GenerationPlan& plan, int batch,
                                         const GenerationControl& control) {
  const GenerationParams& params = plan.params;
  NoiseOptions noise;
  noise.shape = {4, params.height / 8, params.width / 8};
  const auto first = plan.seeds.seeds.begin() + batch * params.batch_size;
  const auto first_sub = plan.seeds.subseeds.begin() + batch * params.batch_size;
  noise.seeds.assign(first, first + params.batch_size);
  noise.subseeds.assign(first_sub, first_sub + params.batch_size);
  noise.subseed_strength = params.subseed_strength;
  noise.seed_resize_from_w = params.seed_resize_from_w;
  noise.seed_resize_from_h = params.seed_resize_from_h;
  noise.eta_noise_seed_delta = params.eta_noise_seed_delta;
  noise.source = params.noise_source;
  noise.device = pipeline.device();
  auto rng = ImageRng::Create(noise);
  if (!rng.ok()) return rng.status();
  // WebUI's p.rng.next(): the seeded initial noise first, then the per-image stream.
  bool first_drawn = false;
  const NoiseDraw draw = [&rng, &first_drawn]() -> absl::StatusOr<at::Tensor> {
    if (first_drawn) return rng->Next();
    first_drawn = true;
    return rng->First();
  };

  BatchLatents out;
  PassInputs first_pass;
  first_pass.settings = &params.sampling;
  first_pass.conditioning = &plan.conditioning;
  first_pass.rng = &*rng;
  first_pass.draw = &draw;
  first_pass.info = {plan.img2img ? SamplingPass::kImg2Img : SamplingPass::kTxt2Img,
                     batch, params.n_iter, params.batch_size, params.width, params.height, params.sampling.steps};
  if (plan.img2img) {
    first_pass.init = plan.init_latent.expand({params.batch_size, -1, -1, -1}).contiguous();
    // An extension's draws (AnimateDiff's per-frame init latents) come before the sampler's noise, as in WebUI.
    if (PointsOf(control).init_latent) {
      at::Tensor init = first_pass.init;
      if (absl::Status st = control.extension->InitLatent(first_pass.info, init, draw); !st.ok()) return st;
      if (!init.defined() || init.sizes() != first_pass.init.sizes()) {
        return absl::InvalidArgumentError("an extension replaced the init latent with one of another shape");
      }
      first_pass.init = init.to(first_pass.init.device(), first_pass.init.scalar_type()).contiguous();
    }
  }
  auto x = draw();
  if (!x.ok()) return x.status();
  first_pass.noise = plan.img2img && params.initial_noise_multiplier != 1.0 ? *x * params.initial_noise_multiplier : *x;
  first_pass.keep = plan.latent_keep;  // inpainting's blend: the first pass only (hires is txt2img)
  first_pass.seeds = &noise.seeds;
  if (plan.inpaint && plan.inpaint->paste_to) {
    const auto [cx, cy, cw, ch] = *plan.inpaint->paste_to;
    first_pass.info.crop_x = static_cast<int>(cx);
    first_pass.info.crop_y = static_cast<int>(cy);
    first_pass.info.crop_width = static_cast<int>(cw);
    first_pass.info.crop_height = static_cast<int>(ch);
  }
  auto sampled = SamplePass(pipeline, plan, first_pass, control, out.skipped);
  if (!sampled.ok()) return sampled.status();

  // The hires pass follows unless the job was interrupted; a Skip ended only the first pass (WebUI's nextjob
  // clears it), so every image of the job has the hires size.
  if (plan.hr_target && (!sampled->interrupted || out.skipped)) {
    out.skipped = false;
    auto upscaled = HiresUpscale(pipeline, sampled->latent, plan.hr_upscaler, *plan.hr_target, noise.seeds, control);
    if (!upscaled.ok()) return upscaled.status();
    // The second pass's noise: the same seeds (and variation) at the new size.
    NoiseOptions hr_noise = noise;
    hr_noise.shape = {4, upscaled->size(2), upscaled->size(3)};
    auto hr_rng = ImageRng::Create(hr_noise);
    if (!hr_rng.ok()) return hr_rng.status();
    bool hr_first_drawn = false;
    const NoiseDraw hr_draw = [&hr_rng, &hr_first_drawn]() -> absl::StatusOr<at::Tensor> {
      if (hr_first_drawn) return hr_rng->Next();
      hr_first_drawn = true;
      return hr_rng->First();
    };
    auto hr_x = hr_draw();
    if (!hr_x.ok()) return hr_x.status();
    PassInputs second;
    second.settings = &plan.hr_settings;
    second.conditioning = &plan.hr_conditioning;
    second.rng = &*hr_rng;
    second.draw = &hr_draw;
    second.noise = *hr_x;
    second.init = *upscaled;
    second.seeds = &noise.seeds;
    second.info = {SamplingPass::kHires, batch, params.n_iter, params.batch_size, plan.hr_target->width,
                   plan.hr_target->height, plan.hr_settings.steps};
    auto hires = SamplePass(pipeline, plan, second, control, out.skipped);
    if (!hires.ok()) return hires.status();
    sampled = *std::move(hires);
  }
  out.sampled = *std::move(sampled);
  return out;
}

absl::Status DecodeAndEmit(const Sd1Pipeline& pipeline, const GenerationPlan& plan, int batch,
                           const SamplingResult& sampled, const GenerationControl& control, GenerationResult& result) {
  const GenerationParams& params = plan.params;
  const auto abandoned = [&control] { return control.abandoned && control.abandoned(); };
  // The activation blocks cached for the sampler's shapes do not fit the VAE's: hand them back before the decode
  // allocates its own, or both are resident at once (the job's peak RSS).
  ReleaseCachedCpuMemory();
  for (int i = 0; i < params.batch_size; ++i) {
    // A job nobody is left to receive skips its decode (a cancelled job's last prediction is decoded only while
    // someone still listens, and that decode stops when the last listener goes).
    if (abandoned()) return absl::OkStatus();
    at::Tensor rgb;
    {
      // One image at a time, as WebUI's decode_latent_batch: the first leaves before the second is decoded.
      StageTimer clock(control.timing, "decode");
      StopScope stop_scope(abandoned);
      auto decoded = pipeline.vae().Decode(sampled.latent.slice(0, i, i + 1) / pipeline.weights().config.scale_factor);
      if (!decoded.ok() && absl::IsCancelled(decoded.status()) && abandoned()) return absl::OkStatus();
      if (!decoded.ok()) return decoded.status();
      try {
        rgb = WebUiToUint8(*decoded).to(at::kCPU)[0];
      } catch (const std::exception& e) {
        return StatusFromException(e, "converting a decoded image");
      }
    }
    const int index = batch * params.batch_size + i;
    // Inpainting: the original laid back over everything outside the mask (pasted into its frame for full res).
    const at::Tensor image = plan.inpaint ? ApplyOverlay(rgb, *plan.inpaint) : rgb;
    result.images.push_back({image, sampled.latent[i], plan.seeds.seeds[index], plan.seeds.subseeds[index], index,
                             sampled.interrupted, sampled.eta, plan.inpaint ? rgb : at::Tensor()});
    if (control.image_ready) {
      if (absl::Status st = control.image_ready(result.images.back()); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationResult> RunGeneration(const Sd1Pipeline& pipeline, const GenerationPlan& plan,
                                               const GenerationControl& control) {
  GenerationResult result;
  result.init_latent = plan.init_latent;
  for (int batch = 0; batch < plan.params.n_iter; ++batch) {
    if (control.interrupt && control.interrupt()) {
      result.interrupted = true;
      break;
    }
    if (control.batch_started) control.batch_started(batch, plan.params.n_iter);
    auto latents = SampleBatch(pipeline, plan, batch, control);
    if (!latents.ok()) return latents.status();
    result.eta = latents->sampled.eta;
    if (absl::Status st = DecodeAndEmit(pipeline, plan, batch, latents->sampled, control, result); !st.ok()) return st;
    if (latents->sampled.interrupted) {
      if (!latents->skipped) {
        result.interrupted = true;
        break;
      }
      ++result.skipped_batches;
    }
  }
  return result;
}

absl::StatusOr<GenerationResult> Generate(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                          const GenerationControl& control) {
  auto plan = PrepareGeneration(pipeline, params, control);
  if (!plan.ok()) return plan.status();
  return RunGeneration(pipeline, *plan, control);
}

}  // namespace atelier::engine
