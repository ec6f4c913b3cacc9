#include "engine/pipeline/generation_infotext.h"

#include <filesystem>
#include <string>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace atelier::engine {

InfotextFields GenerationInfotext(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                  const GeneratedImage& image, double eta, const JobExtension* extension) {
  return GenerationInfotext(pipeline.weights(), params, image, eta, extension);
}

InfotextFields GenerationInfotext(const Sd1Weights& w, const GenerationParams& params, const GeneratedImage& image,
                                  double eta, const JobExtension* extension) {
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
  for (const auto& kv : params.extra_infotext) f.extra.push_back(kv);
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
  // The extensions' keys last (WebUI merges scripts' extra_generation_params after its own).
  if (extension != nullptr && extension->points().infotext) extension->InfotextAdditions(image.index, f.extra);
  return f;
}

}  // namespace atelier::engine
