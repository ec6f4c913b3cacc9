#include "server/generation_settings.h"

#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/models/nn_util.h"
#include "engine/text/prompt_chunker.h"
#include "engine/sampling/sampler_table.h"
#include "server/plugin_args.h"
#include "util/limits.h"
#include "util/status_macros.h"
#include "util/user_text.h"

namespace atelier::server {
namespace {

using google::protobuf::Value;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }


absl::Status NotBuilt(const std::string& what) {
  return absl::UnimplementedError(absl::StrCat(what, " is not built yet in this version of atelierd"));
}

// override_settings values, typed, with messages that name the key and what it takes.
class Options {
 public:
  explicit Options(const google::protobuf::Struct& s) : fields_(s.fields()) {}

  bool Has(const std::string& key) const { return fields_.count(key) > 0; }

  absl::StatusOr<std::optional<double>> Number(const std::string& key, double lo, double hi) {
    used_.insert(key);
    const auto it = fields_.find(key);
    if (it == fields_.end()) return std::optional<double>();
    double v = 0;
    if (it->second.kind_case() == Value::kNumberValue) {
      v = it->second.number_value();
    } else if (it->second.kind_case() == Value::kStringValue && absl::SimpleAtod(it->second.string_value(), &v)) {
    } else {
      return Invalid(absl::StrCat("override_settings.", key, " must be a number from ", lo, " to ", hi));
    }
    if (!std::isfinite(v) || v < lo || v > hi) {
      return Invalid(absl::StrCat("override_settings.", key, " ", v, " is outside [", lo, ", ", hi, "]"));
    }
    return std::optional<double>(v);
  }
  absl::StatusOr<std::optional<int64_t>> Integer(const std::string& key, double lo, double hi) {
    auto v = Number(key, lo, hi);
    if (!v.ok()) return v.status();
    if (!v->has_value()) return std::optional<int64_t>();
    if (**v != std::floor(**v)) return Invalid(absl::StrCat("override_settings.", key, " must be a whole number"));
    return std::optional<int64_t>(static_cast<int64_t>(**v));
  }
  absl::StatusOr<std::optional<bool>> Bool(const std::string& key) {
    used_.insert(key);
    const auto it = fields_.find(key);
    if (it == fields_.end()) return std::optional<bool>();
    if (it->second.kind_case() != Value::kBoolValue) {
      return Invalid(absl::StrCat("override_settings.", key, " must be true or false"));
    }
    return std::optional<bool>(it->second.bool_value());
  }
  absl::StatusOr<std::optional<std::string>> Text(const std::string& key) {
    used_.insert(key);
    const auto it = fields_.find(key);
    if (it == fields_.end()) return std::optional<std::string>();
    if (it->second.kind_case() != Value::kStringValue) {
      return Invalid(absl::StrCat("override_settings.", key, " must be a string"));
    }
    return std::optional<std::string>(it->second.string_value());
  }
  std::vector<std::string> Unused() const {
    std::vector<std::string> out;
    for (const auto& [key, value] : fields_) {
      if (used_.count(key) == 0) out.push_back(key);
    }
    return out;
  }

 private:
  const google::protobuf::Map<std::string, Value>& fields_;
  std::set<std::string> used_;
};

absl::StatusOr<engine::ImageFileFormat> SamplesFormat(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "png") return engine::ImageFileFormat::kPng;
  if (lower == "jpg" || lower == "jpeg") return engine::ImageFileFormat::kJpeg;
  if (lower == "webp") return engine::ImageFileFormat::kWebp;
  return Invalid(absl::StrCat("override_settings.samples_format ", Quoted(name), " is not one of png, jpg, jpeg, webp"));
}

// WebUI features that belong to later work: refused clearly instead of ignored.
absl::Status RefuseWhatIsNotBuilt(const v1::GenerateRequest& r) {
  if (!r.hr_checkpoint_name().empty() && r.hr_checkpoint_name() != "Use same checkpoint") {
    return NotBuilt("a separate hires-fix checkpoint (hr_checkpoint_name)");
  }
  if (!r.script_name().empty()) {  // the runner takes the scripts it has before this
    return absl::NotFoundError(absl::StrCat("selectable script ", Quoted(r.script_name()),
                                            " not found; scripts: x/y/z plot (plugins are always-on: pass them in "
                                            "alwayson_scripts)"));
  }
  if (r.init_images_size() > 1) {
    return NotBuilt(absl::StrCat("img2img with ", r.init_images_size(), " init images (one per batch item)"));
  }
  if (r.styles_size() > 0) {
    return absl::NotFoundError(absl::StrCat("style ", Quoted(r.styles(0)), " not found: no prompt styles are defined"));
  }
  if (r.has_s_min_uncond() && r.s_min_uncond() != 0.0f) return NotBuilt("negative guidance minimum sigma (s_min_uncond)");
  return absl::OkStatus();
}

// The sampler, scheduler, steps, CFG, eta, churn/noise and schedule options (WebUI's option names), checked.
absl::Status ReadSampling(const v1::GenerateRequest& r, Options& o, engine::SamplingSettings& s) {
  // Sampler and scheduler, WebUI's API default "Euler" and legacy combined names.
  auto choice = engine::ResolveSampler(r.sampler_name().empty() ? "Euler" : r.sampler_name(),
                                       r.scheduler().empty() ? "Automatic" : r.scheduler());
  if (!choice.ok()) return choice.status();
  s.choice = *choice;
  s.steps = r.steps();
  s.max_steps = kMaxSteps;
  s.cfg_scale = r.cfg_scale();
  s.denoising_strength = r.denoising_strength();

  // Eta: the request's, else the option for the sampler's kind, else WebUI's defaults (left to the sampler).
  ATELIER_ASSIGN_OR_RETURN(const auto eta_ancestral, o.Number("eta_ancestral", 0, 100));
  ATELIER_ASSIGN_OR_RETURN(const auto eta_ddim, o.Number("eta_ddim", 0, 100));
  if (r.has_eta()) {
    s.eta = r.eta();
  } else if (s.choice.sampler->timesteps ? eta_ddim.has_value() : eta_ancestral.has_value()) {
    s.eta = s.choice.sampler->timesteps ? *eta_ddim : *eta_ancestral;
  }
  // Churn and noise: the request's, else the option, else the default.
  struct Extra {
    const char* key;
    bool has;
    double value;
    double* target;
  };
  const Extra extras[] = {{"s_churn", r.has_s_churn(), r.s_churn(), &s.s_churn},
                          {"s_tmin", r.has_s_tmin(), r.s_tmin(), &s.s_tmin},
                          {"s_tmax", r.has_s_tmax(), r.s_tmax(), &s.s_tmax},
                          {"s_noise", r.has_s_noise(), r.s_noise(), &s.s_noise}};
  for (const Extra& e : extras) {
    ATELIER_ASSIGN_OR_RETURN(const auto option, o.Number(e.key, 0, 1e6));
    if (e.has) {
      *e.target = e.value;
    } else if (option.has_value()) {
      *e.target = *option;
    }
  }
  ATELIER_ASSIGN_OR_RETURN(const auto sigma_min, o.Number("sigma_min", 0, 1e4));
  ATELIER_ASSIGN_OR_RETURN(const auto sigma_max, o.Number("sigma_max", 0, 1e4));
  ATELIER_ASSIGN_OR_RETURN(const auto rho, o.Number("rho", 0, 100));
  s.schedule.sigma_min = sigma_min.value_or(0);
  s.schedule.sigma_max = sigma_max.value_or(0);
  s.schedule.rho = rho.value_or(0);
  ATELIER_ASSIGN_OR_RETURN(const auto beta_alpha, o.Number("beta_dist_alpha", 0.01, 100));
  ATELIER_ASSIGN_OR_RETURN(const auto beta_beta, o.Number("beta_dist_beta", 0.01, 100));
  s.schedule.beta_alpha = beta_alpha.value_or(0.6);
  s.schedule.beta_beta = beta_beta.value_or(0.6);
  ATELIER_ASSIGN_OR_RETURN(const auto discard, o.Bool("always_discard_next_to_last_sigma"));
  if (discard.value_or(false)) s.schedule.discard_next_to_last_sigma = true;
  ATELIER_ASSIGN_OR_RETURN(const auto old_karras, o.Bool("use_old_karras_scheduler_sigmas"));
  s.schedule.use_old_karras_scheduler_sigmas = old_karras.value_or(false);
  ATELIER_ASSIGN_OR_RETURN(const auto sgm, o.Bool("sgm_noise_multiplier"));
  s.sgm_noise_multiplier = sgm.value_or(false);
  ATELIER_ASSIGN_OR_RETURN(const auto quantize, o.Bool("enable_quantization"));
  s.quantize = quantize.value_or(false);
  ATELIER_ASSIGN_OR_RETURN(const auto fix_steps, o.Bool("img2img_fix_steps"));
  s.img2img_fix_steps = fix_steps.value_or(false);
  if (absl::Status st = engine::ValidateSamplingSettings(s); !st.ok()) return st;
  return absl::OkStatus();
}

// Text-encoder, noise and model options of override_settings.
absl::Status ReadTextAndModelOptions(Options& o, JobSettings& out) {
  engine::GenerationParams& p = out.params;
  ATELIER_ASSIGN_OR_RETURN(const auto clip_skip, o.Integer("CLIP_stop_at_last_layers", 1, 12));
  p.text.clip_skip = static_cast<int>(clip_skip.value_or(1));
  ATELIER_ASSIGN_OR_RETURN(const auto ensd, o.Integer("eta_noise_seed_delta", 0, 4294967295.0));
  p.eta_noise_seed_delta = ensd.value_or(0);
  ATELIER_ASSIGN_OR_RETURN(const auto rng, o.Text("randn_source"));
  if (rng.has_value()) {
    auto source = engine::ParseNoiseSource(*rng);
    if (!source.ok()) return Invalid(absl::StrCat("override_settings.randn_source: ", source.status().message()));
    p.noise_source = *source;
  }
  ATELIER_ASSIGN_OR_RETURN(const auto emphasis, o.Text("emphasis"));
  if (emphasis.has_value()) {
    auto parsed = engine::ParseEmphasis(*emphasis);
    if (!parsed.ok()) return Invalid(absl::StrCat("override_settings.emphasis: ", parsed.status().message()));
    p.text.chunking.emphasis = *parsed;
  }
  ATELIER_ASSIGN_OR_RETURN(const auto backtrack, o.Integer("comma_padding_backtrack", 0, 74));
  if (backtrack.has_value()) p.text.chunking.comma_padding_backtrack = static_cast<int>(*backtrack);
  ATELIER_ASSIGN_OR_RETURN(const auto checkpoint, o.Text("sd_model_checkpoint"));
  out.checkpoint = checkpoint.value_or("");
  ATELIER_ASSIGN_OR_RETURN(const auto vae, o.Text("sd_vae"));
  out.vae = vae;
  ATELIER_ASSIGN_OR_RETURN(const auto tile, o.Integer("ESRGAN_tile", 0, 2048));
  if (tile.has_value()) out.upscaler_tiles.tile = static_cast<int>(*tile);
  ATELIER_ASSIGN_OR_RETURN(const auto overlap, o.Integer("ESRGAN_tile_overlap", 0, 256));
  if (overlap.has_value()) out.upscaler_tiles.overlap = static_cast<int>(*overlap);
  if (out.upscaler_tiles.tile > 0 && out.upscaler_tiles.overlap >= out.upscaler_tiles.tile) {
    return Invalid(absl::StrCat("override_settings.ESRGAN_tile_overlap ", out.upscaler_tiles.overlap,
                                " must be smaller than ESRGAN_tile ", out.upscaler_tiles.tile));
  }
  ATELIER_ASSIGN_OR_RETURN(const auto lora_warn, o.Bool("lora_missing_warn"));
  out.lora_missing_warn = lora_warn.value_or(false);
  ATELIER_ASSIGN_OR_RETURN(const auto lora_hashes, o.Bool("lora_add_hashes_to_infotext"));
  out.lora_hashes_infotext = lora_hashes.value_or(true);
  ATELIER_ASSIGN_OR_RETURN(const auto ti_hashes, o.Bool("textual_inversion_add_hashes_to_infotext"));
  out.ti_hashes_infotext = ti_hashes.value_or(true);
  return absl::OkStatus();
}

// Hires fix (txt2img): the second pass's size, upscaler, sampler and prompts; what would fail after the first pass
// is refused now.
absl::Status ReadHires(const v1::GenerateRequest& r, engine::GenerationParams& p) {
  const engine::SamplingSettings& s = p.sampling;
  if (r.enable_hr() && r.mode() == v1::MODE_TXT2IMG) {
    engine::HiresFix& hr = p.hires;
    hr.enabled = true;
    // Legacy firstphase_width/height: the first pass's size, the request's size being the old target.
    if (r.firstphase_width() > 0 || r.firstphase_height() > 0) {
      p.width = r.firstphase_width();
      p.height = r.firstphase_height();
    }
    hr.scale = r.has_hr_scale() ? r.hr_scale() : 2.0;
    hr.resize_x = r.hr_resize_x();
    hr.resize_y = r.hr_resize_y();
    hr.upscaler = r.hr_upscaler();
    // A name that is no latent mode or built-in is an upscaler model: checked against the files at admission.
    if (auto u = engine::FindHiresUpscaler(hr.upscaler); !u.ok() && !absl::IsNotFound(u.status())) return u.status();
    if (r.hr_second_pass_steps() < 0 || r.hr_second_pass_steps() > kMaxSteps) {
      return Invalid(absl::StrCat("hr_second_pass_steps ", r.hr_second_pass_steps(), " is not allowed: use 0 (same as "
                                  "steps) to ", kMaxSteps));
    }
    hr.second_pass_steps = r.hr_second_pass_steps();
    const bool same_sampler = r.hr_sampler_name().empty() || r.hr_sampler_name() == "Use same sampler";
    const bool same_scheduler = r.hr_scheduler().empty() || r.hr_scheduler() == "Use same scheduler";
    if (!same_sampler || !same_scheduler) {
      auto hr_choice = engine::ResolveSampler(same_sampler ? std::string(s.choice.sampler->name) : r.hr_sampler_name(),
                                              same_scheduler ? engine::SchedulerLabel(s.choice.scheduler)
                                                             : r.hr_scheduler());
      if (!hr_choice.ok()) {
        return Invalid(absl::StrCat("hires fix: ", hr_choice.status().message()));
      }
      hr.sampler = *hr_choice;
      hr.sampler_named = !same_sampler;
      hr.scheduler_named = !same_scheduler;
    }
    hr.prompt = r.hr_prompt();
    hr.negative_prompt = r.hr_negative_prompt();
    if (auto t = engine::HiresTargetSize(p.width, p.height, hr, kMaxImageSide); !t.ok()) return t.status();
    // The second pass's step count is known now: refuse what would fail only after the first pass.
    engine::SamplingSettings second = s;
    if (hr.sampler) second.choice = *hr.sampler;
    if (hr.second_pass_steps > 0) second.steps = hr.second_pass_steps;
    second.img2img_fix_steps = true;
    const int schedule = engine::Img2ImgSteps(second).first;
    if (schedule < 1 || schedule > kMaxSteps) {
      return Invalid(absl::StrCat("hires fix with denoising_strength ", s.denoising_strength, " and ", second.steps,
                                  " steps needs a schedule of ", schedule, " steps; use a strength above 0 and at "
                                  "most ", kMaxSteps, " schedule steps"));
    }
  }
  return absl::OkStatus();
}

// img2img: resize mode, the mask's settings (inpainting), the noise multiplier.
absl::Status ReadImg2Img(const v1::GenerateRequest& r, Options& o, JobSettings& out) {
  engine::GenerationParams& p = out.params;
  out.resize_mode = static_cast<engine::ResizeMode>(r.resize_mode());
  p.resize_mode = out.resize_mode;
  if (!r.mask().empty()) {
    if (r.mode() != v1::MODE_IMG2IMG) return Invalid("a mask needs img2img (init_images)");
    out.inpaint = true;
    engine::InpaintSettings& in = p.inpaint;
    in.blur_x = r.has_mask_blur() ? r.mask_blur() : r.has_mask_blur_x() ? r.mask_blur_x() : 4;
    in.blur_y = r.has_mask_blur() ? r.mask_blur() : r.has_mask_blur_y() ? r.mask_blur_y() : 4;
    if (in.blur_x < 0 || in.blur_y < 0 || in.blur_x > 256 || in.blur_y > 256) {
      return Invalid(absl::StrCat("mask_blur ", in.blur_x, "x", in.blur_y, " is outside 0 to 256"));
    }
    in.round = r.has_mask_round() ? r.mask_round() : true;
    const int fill = r.has_inpainting_fill() ? r.inpainting_fill() : 0;
    if (fill < 0 || fill > 3) {
      return Invalid(absl::StrCat("inpainting_fill ", fill,
                                  " is not one of 0 fill, 1 original, 2 latent noise, 3 latent nothing"));
    }
    in.fill = static_cast<engine::InpaintFill>(fill);
    in.full_res = r.has_inpaint_full_res() ? r.inpaint_full_res() : true;
    in.padding = r.has_inpaint_full_res_padding() ? r.inpaint_full_res_padding() : 0;
    if (in.padding < 0 || in.padding > kMaxImageSide) {
      return Invalid(absl::StrCat("inpaint_full_res_padding ", in.padding, " is outside 0 to ", kMaxImageSide));
    }
    const int invert = r.has_inpainting_mask_invert() ? r.inpainting_mask_invert() : 0;
    if (invert != 0 && invert != 1) {
      return Invalid(absl::StrCat("inpainting_mask_invert ", invert, " is not 0 (inpaint masked) or 1 (not masked)"));
    }
    in.invert = invert == 1;
  }
  // Inpainting checkpoints weigh their masked-image conditioning by this in every img2img (WebUI's option).
  ATELIER_ASSIGN_OR_RETURN(const auto mask_weight, o.Number("inpainting_mask_weight", 0, 1));
  p.inpaint.mask_weight = mask_weight.value_or(1.0);
  p.latent_upscale = out.resize_mode == engine::ResizeMode::kLatentUpscale;
  if (r.has_initial_noise_multiplier()) {
    if (!std::isfinite(r.initial_noise_multiplier()) || r.initial_noise_multiplier() < 0 ||
        r.initial_noise_multiplier() > 10) {
      return Invalid(absl::StrCat("initial_noise_multiplier ", r.initial_noise_multiplier(), " is outside [0, 10]"));
    }
    p.initial_noise_multiplier = r.initial_noise_multiplier();
  } else {
    ATELIER_ASSIGN_OR_RETURN(const auto multiplier, o.Number("initial_noise_multiplier", 0, 10));
    p.initial_noise_multiplier = multiplier.value_or(1.0);
  }
  return absl::OkStatus();
}

// Previews: the request's, else WebUI's options, else cheap approximation every step as JPEG at most 512 px.
absl::Status ReadPreview(const v1::GenerateRequest& r, Options& o, JobSettings& out) {
  const v1::PreviewOptions& preview = r.preview();
  ATELIER_ASSIGN_OR_RETURN(const auto progress_type, o.Text("show_progress_type"));
  ATELIER_ASSIGN_OR_RETURN(const auto every_n, o.Integer("show_progress_every_n_steps", -1, 1000));
  ATELIER_ASSIGN_OR_RETURN(const auto live_previews, o.Bool("live_previews_enable"));
  switch (preview.method()) {
    case v1::PREVIEW_METHOD_NONE: out.preview.method = engine::PreviewMethod::kNone; break;
    case v1::PREVIEW_METHOD_APPROX_CHEAP: out.preview.method = engine::PreviewMethod::kApproxCheap; break;
    case v1::PREVIEW_METHOD_APPROX_COMFYUI: out.preview.method = engine::PreviewMethod::kApproxComfy; break;
    case v1::PREVIEW_METHOD_TAESD: out.preview.method = engine::PreviewMethod::kTaesd; break;
    case v1::PREVIEW_METHOD_FULL: out.preview.method = engine::PreviewMethod::kFull; break;
    default:
      if (progress_type.has_value()) {
        auto method = engine::ParsePreviewMethod(*progress_type);
        // WebUI's default "Approx NN" (a network this daemon does not ship) falls back to the cheap approximation,
        // so clients that forward all of WebUI's options still run.
        if (method.status().code() == absl::StatusCode::kUnimplemented) method = engine::PreviewMethod::kApproxCheap;
        if (!method.ok()) return Invalid(absl::StrCat("override_settings.show_progress_type: ", method.status().message()));
        out.preview.method = *method;
      }
      break;
  }
  if (!live_previews.value_or(true)) out.preview.method = engine::PreviewMethod::kNone;
  out.preview.format = FileFormatOf(preview.format(), engine::ImageFileFormat::kJpeg);
  if (preview.every_n_steps() > 0) {
    out.preview.every_n_steps = preview.every_n_steps();
  } else if (every_n.has_value()) {
    // WebUI: -1 = only at the end of a batch; 0 and 1 = every step (it previews when step - last >= N).
    out.preview.every_n_steps = *every_n < 0 ? -1 : std::max<int>(1, static_cast<int>(*every_n));
  }
  out.preview.max_size = preview.max_size() > 0 ? preview.max_size() : 512;
  return absl::OkStatus();
}

// Results: the request's format, else samples_format; infotext unless omitted (or enable_pnginfo false).
absl::Status ReadOutput(const v1::GenerateRequest& r, Options& o, JobSettings& out) {
  ATELIER_ASSIGN_OR_RETURN(const auto samples_format, o.Text("samples_format"));
  engine::ImageFileFormat fallback = engine::ImageFileFormat::kPng;
  if (samples_format.has_value()) {
    auto format = SamplesFormat(*samples_format);
    if (!format.ok()) return format.status();
    fallback = *format;
  }
  out.output.format = FileFormatOf(r.output().format(), fallback);
  ATELIER_ASSIGN_OR_RETURN(const auto jpeg_quality, o.Integer("jpeg_quality", 1, 100));
  out.output.quality = r.output().quality() > 0 ? r.output().quality() : static_cast<int>(jpeg_quality.value_or(95));
  ATELIER_ASSIGN_OR_RETURN(const auto pnginfo, o.Bool("enable_pnginfo"));
  out.output.omit_infotext = r.output().omit_infotext() || !pnginfo.value_or(true);
  return absl::OkStatus();
}

}  // namespace

engine::ImageFileFormat FileFormatOf(v1::ImageFormat format, engine::ImageFileFormat fallback) {
  switch (format) {
    case v1::IMAGE_FORMAT_PNG: return engine::ImageFileFormat::kPng;
    case v1::IMAGE_FORMAT_JPEG: return engine::ImageFileFormat::kJpeg;
    case v1::IMAGE_FORMAT_WEBP: return engine::ImageFileFormat::kWebp;
    default: return fallback;
  }
}

absl::StatusOr<JobSettings> JobSettingsFromRequest(const v1::GenerateRequest& r) {
  ATELIER_RETURN_IF_ERROR(RefuseWhatIsNotBuilt(r));
  JobSettings out;
  engine::GenerationParams& p = out.params;
  p.prompt = r.prompt();
  p.negative_prompt = r.negative_prompt();
  p.width = r.width();
  p.height = r.height();
  p.batch_size = r.batch_size();
  p.n_iter = r.n_iter();
  p.max_images = kMaxImagesPerJob;
  p.seed = r.seed();
  p.subseed = r.subseed();
  p.subseed_strength = r.subseed_strength();
  p.seed_resize_from_w = std::max(0, r.seed_resize_from_w());
  p.seed_resize_from_h = std::max(0, r.seed_resize_from_h());

  Options o(r.override_settings());
  ATELIER_RETURN_IF_ERROR(ReadSampling(r, o, p.sampling));
  ATELIER_RETURN_IF_ERROR(ReadTextAndModelOptions(o, out));
  ATELIER_RETURN_IF_ERROR(ReadHires(r, p));
  ATELIER_RETURN_IF_ERROR(ReadImg2Img(r, o, out));
  ATELIER_RETURN_IF_ERROR(ReadPreview(r, o, out));
  ATELIER_RETURN_IF_ERROR(ReadOutput(r, o, out));
  out.ignored_settings = o.Unused();
  out.img2img = r.mode() == v1::MODE_IMG2IMG;
  auto plugin_args = PluginArgsJson(r);
  if (!plugin_args.ok()) return plugin_args.status();
  out.plugin_args = *std::move(plugin_args);
  return out;
}

}  // namespace atelier::server
