#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/sampling/brownian_tree.h"
#include "engine/models/nn_util.h"
#include "engine/sampling/samplers.h"

namespace atelier::engine {
namespace {

Sigmas ToSigmas(const at::Tensor& sigmas) {
  const at::Tensor f = sigmas.to(at::kCPU, at::kFloat).contiguous();
  return Sigmas(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

bool Discards(const SamplingSettings& s) {
  return s.choice.sampler->discard_next_to_last_sigma || s.schedule.discard_next_to_last_sigma;
}

double ResolvedEta(const SamplingSettings& s) {
  if (s.eta) return *s.eta;
  return s.choice.sampler->timesteps ? 0.0 : 1.0;  // WebUI's eta_ddim / eta_ancestral defaults
}

absl::Status ValidSchedule(const ScheduledCond& c, const char* what, size_t image) {
  if (c.tensors.empty() || c.tensors.size() != c.end_at_step.size()) {
    return absl::InvalidArgumentError(absl::StrCat("image ", image, ": ", what,
                                                   " needs one or more conditioning tensors, one per end step"));
  }
  for (const auto& t : c.tensors) {
    if (!t.defined() || t.dim() != 2 || t.size(0) < 1) {
      return absl::InvalidArgumentError(absl::StrCat("image ", image, ": ", what, " must be [tokens, dim] tensors"));
    }
  }
  return absl::OkStatus();
}

// One AND-part list and one negative per image, each a valid schedule; image_cond one row per image.
absl::Status ValidateConditioning(const CfgConditioning& c, const at::Tensor& noise) {
  if (!noise.defined() || noise.dim() != 4) return absl::InvalidArgumentError("noise must be [images, 4, h, w]");
  const size_t images = static_cast<size_t>(noise.size(0));
  if (images == 0 || c.cond.size() != images || c.uncond.size() != images) {
    return absl::InvalidArgumentError(absl::StrCat("conditioning for ", c.cond.size(), " prompts and ",
                                                   c.uncond.size(), " negative prompts, but noise for ", images,
                                                   " images: one of each per image"));
  }
  for (size_t i = 0; i < images; ++i) {
    if (c.cond[i].empty()) return absl::InvalidArgumentError(absl::StrCat("image ", i, " has no prompt part"));
    for (const auto& part : c.cond[i]) {
      if (absl::Status st = ValidSchedule(part.cond, "the prompt", i); !st.ok()) return st;
    }
    if (absl::Status st = ValidSchedule(c.uncond[i], "the negative prompt", i); !st.ok()) return st;
  }
  if (c.image_cond.defined() && c.image_cond.size(0) != noise.size(0)) {
    return absl::InvalidArgumentError("image_cond must have one row per image");
  }
  return absl::OkStatus();
}

absl::Status NotFinite(const char* name, double v) {
  return absl::InvalidArgumentError(absl::StrCat(name, " must be a finite number, got ", v));
}

}  // namespace

NoiseSampler StepNoiseFrom(ImageRng* rng) {
  return [rng](double, double) {
    auto noise = rng->Next();
    if (!noise.ok()) throw SamplingStopped{noise.status()};
    return *std::move(noise);
  };
}

absl::Status ValidateSamplingSettings(const SamplingSettings& s) {
  if (s.choice.sampler == nullptr) return absl::InvalidArgumentError("no sampler chosen");
  if (s.steps < 1 || s.steps > s.max_steps) {
    return absl::InvalidArgumentError(
        absl::StrCat("steps must be between 1 and ", s.max_steps, " (the daemon's maximum), got ", s.steps));
  }
  if (!std::isfinite(s.cfg_scale)) return NotFinite("cfg_scale", s.cfg_scale);
  if (!(s.denoising_strength >= 0 && s.denoising_strength <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("denoising_strength must be between 0 and 1, got ", s.denoising_strength));
  }
  if (s.eta && !(std::isfinite(*s.eta) && *s.eta >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("eta must be a finite number >= 0, got ", *s.eta));
  }
  for (auto [name, v] : {std::pair<const char*, double>{"s_noise", s.s_noise}, {"s_churn", s.s_churn},
                         {"s_tmin", s.s_tmin}, {"s_tmax", s.s_tmax}}) {
    if (!std::isfinite(v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be a finite number >= 0, got ", v));
    }
  }
  const auto& o = s.schedule;
  for (auto [name, v] : {std::pair<const char*, double>{"sigma_min", o.sigma_min}, {"sigma_max", o.sigma_max},
                         {"rho", o.rho}}) {
    if (!std::isfinite(v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be a finite number >= 0 (0 = the model's "
                                                           "default), got ",
                                                     v));
    }
  }
  if (s.unipc.order < 1 || s.unipc.order > 3) {
    return absl::InvalidArgumentError(absl::StrCat("UniPC order must be 1, 2 or 3, got ", s.unipc.order));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> SamplerSigmas(const SamplingSettings& settings, const ModelSchedule& schedule) {
  ScheduleOptions options = settings.schedule;
  options.discard_next_to_last_sigma = Discards(settings);
  const Scheduler scheduler = EffectiveScheduler(settings.choice).value_or(Scheduler::kUniform);
  return BuildSigmas(scheduler, settings.steps, schedule, options);
}

std::vector<int> SamplerTimesteps(const SamplingSettings& settings) {
  const int steps = settings.steps + (Discards(settings) ? 1 : 0);
  const int stride = std::max(1000 / steps, 1);
  std::vector<int> timesteps;
  for (int t = 0; t < 1000; t += stride) timesteps.push_back(std::clamp(t + 1, 0, 999));
  return timesteps;
}

std::pair<int, int> Img2ImgSteps(const SamplingSettings& s) {
  const double strength = std::min(s.denoising_strength, 0.999);
  if (s.img2img_fix_steps) {
    // In double first: a tiny strength would overflow int (Sample refuses more than max_steps).
    const double steps = s.denoising_strength > 0 ? std::floor(s.steps / strength) : 0.0;
    return {static_cast<int>(std::min(steps, 1e9)), s.steps - 1};
  }
  return {s.steps, static_cast<int>(strength * s.steps)};
}

absl::StatusOr<SamplingResult> Sample(const SamplingSettings& settings_in, const ModelSchedule& base_schedule,
                                      SamplingInputs inputs) {
  if (absl::Status st = ValidateSamplingSettings(settings_in); !st.ok()) return st;
  SamplingSettings settings = settings_in;
  const SamplerInfo& sampler = *settings.choice.sampler;
  const bool img2img = inputs.init_latent.defined();
  int t_enc = 0;
  if (img2img) std::tie(settings.steps, t_enc) = Img2ImgSteps(settings_in);
  if (img2img && settings.steps < 1) {
    return absl::InvalidArgumentError("denoising_strength 0 with img2img_fix_steps leaves no steps to run");
  }
  if (settings.steps > settings.max_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "img2img_fix_steps with denoising_strength ", settings_in.denoising_strength, " needs a schedule of ",
        settings.steps, " steps; the maximum is ", settings.max_steps, " (raise the strength or lower the steps)"));
  }
  if (absl::Status st = ValidateConditioning(inputs.conditioning, inputs.noise); !st.ok()) return st;
  if (img2img && !inputs.init_latent.sizes().equals(inputs.noise.sizes())) {
    return absl::InvalidArgumentError("the init latent and the noise differ in shape");
  }
  if (sampler.brownian_noise && !inputs.brownian_noise &&
      static_cast<int64_t>(inputs.seeds.size()) != inputs.noise.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(sampler.name, " needs one seed per image for its Brownian noise: ",
                                                   inputs.seeds.size(), " seeds for ", inputs.noise.size(0),
                                                   " images"));
  }
  const int total_steps = img2img ? t_enc + 1 : settings.steps;

  SamplingResult result;
  result.eta = ResolvedEta(settings);
  SamplerParams params;
  params.eta = result.eta;
  // WebUI passes the churn settings and s_noise only to the samplers that list them (sampler_extra_params).
  if (sampler.takes_churn) {
    params.s_churn = settings.s_churn;
    params.s_tmin = settings.s_tmin;
    params.s_tmax = settings.s_tmax == 0 ? std::numeric_limits<double>::infinity() : settings.s_tmax;
  }
  if (sampler.takes_s_noise) params.s_noise = settings.s_noise;

  try {
    std::optional<ModelSchedule> lcm_schedule;
    if (sampler.id == SamplerId::kLcm) lcm_schedule.emplace(ModelSchedule::Lcm(base_schedule.alphas_cumprod()));
    const ModelSchedule& schedule = lcm_schedule ? *lcm_schedule : base_schedule;

    CfgDenoiserOptions options;
    options.cfg_scale = settings.cfg_scale;
    options.total_sampling_steps = total_steps;
    options.interrupt = inputs.interrupt;
    options.extension = inputs.extension;
    options.quantize = settings.quantize;
    if (img2img && inputs.latent_keep.defined()) {
      options.latent_keep = inputs.latent_keep;
      options.init_latent = inputs.init_latent;
    }
    CfgDenoiser denoiser(inputs.model, &schedule, std::move(inputs.conditioning), options);
    int reported = 0;
    denoiser.set_progress([&](const SamplingProgress& p) {
      ++reported;
      if (inputs.progress) inputs.progress(p);
    });

    KernelContext ctx{denoiser, inputs.step_noise, params};
    at::Tensor x;
    at::Tensor out;
    try {
      if (sampler.timesteps) {
        std::vector<int> timesteps = SamplerTimesteps(settings);
        if (img2img) {
          const std::vector<int> all = timesteps;
          const int clamped = std::min<int>(t_enc, static_cast<int>(all.size()) - 1);
          timesteps.assign(all.begin(), all.begin() + clamped);
          const double a = schedule.alphas_cumprod()[all[clamped]].item<double>();
          x = inputs.init_latent * std::sqrt(a) + inputs.noise * std::sqrt(1 - a);
        } else {
          x = inputs.noise;
        }
        result.timesteps = timesteps;
        const at::Tensor& ac = schedule.alphas_cumprod();
        switch (sampler.id) {
          case SamplerId::kDdim:
            out = SampleDdim(ctx, x, timesteps, ac, false);
            break;
          case SamplerId::kDdimCfgpp:
            out = SampleDdim(ctx, x, timesteps, ac, true);
            break;
          case SamplerId::kPlms:
            out = SamplePlms(ctx, x, timesteps, ac);
            break;
          default:
            out = SampleUniPc(ctx, x, timesteps, ac, settings.unipc, img2img);
            break;
        }
      } else {
        auto sigmas_or = SamplerSigmas(settings, schedule);
        if (!sigmas_or.ok()) return sigmas_or.status();
        const at::Tensor full = *sigmas_or;
        at::Tensor sched = full;
        if (img2img) {
          // WebUI: sigma_sched = sigmas[steps - t_enc - 1:]
          const int64_t start = std::clamp<int64_t>(settings.steps - t_enc - 1, 0, full.size(0) - 2);
          sched = full.slice(0, start);
        }
        result.sigmas = sched;
        const Sigmas sigmas = ToSigmas(sched);
        if (img2img) {
          x = inputs.init_latent + inputs.noise * sigmas[0];
        } else if (settings.sgm_noise_multiplier) {
          x = inputs.noise * std::sqrt(1.0 + static_cast<double>(static_cast<float>(sigmas[0] * sigmas[0])));
        } else {
          x = inputs.noise * sigmas[0];
        }
        if (sampler.brownian_noise) {
          // Bounds from the full schedule: its smallest positive and its largest sigma.
          const Sigmas all = ToSigmas(full);
          double lo = std::numeric_limits<double>::infinity(), hi = 0;
          for (double s : all) {
            if (s > 0) lo = std::min(lo, s);
            hi = std::max(hi, s);
          }
          if (inputs.brownian_noise) {
            ctx.noise = inputs.brownian_noise(lo, hi);
          } else {
            auto tree = std::make_shared<BrownianTreeNoise>(
                std::vector<int64_t>{x.size(1), x.size(2), x.size(3)}, inputs.seeds, lo, hi, x.device());
            ctx.noise = [tree](double s, double s_next) { return (*tree)(s, s_next); };
          }
        }
        // DPM fast / adaptive take the model's range (img2img: the used tail's range).
        const double dpm_min = img2img ? sigmas[sigmas.size() - 2] : schedule.sigma_min();
        const double dpm_max = img2img ? sigmas[0] : schedule.sigma_max();
        switch (sampler.id) {
          case SamplerId::kDpmpp2m: out = SampleDpmpp2m(ctx, x, sigmas); break;
          case SamplerId::kDpmppSde: out = SampleDpmppSde(ctx, x, sigmas); break;
          case SamplerId::kDpmpp2mSde: out = SampleDpmpp2mSde(ctx, x, sigmas, false); break;
          case SamplerId::kDpmpp2mSdeHeun: out = SampleDpmpp2mSde(ctx, x, sigmas, true); break;
          case SamplerId::kDpmpp2sAncestral: out = SampleDpmpp2sAncestral(ctx, x, sigmas); break;
          case SamplerId::kDpmpp3mSde: out = SampleDpmpp3mSde(ctx, x, sigmas); break;
          case SamplerId::kEulerAncestral: out = SampleEulerAncestral(ctx, x, sigmas); break;
          case SamplerId::kEuler: out = SampleEuler(ctx, x, sigmas); break;
          case SamplerId::kLms: out = SampleLms(ctx, x, sigmas); break;
          case SamplerId::kHeun: out = SampleHeun(ctx, x, sigmas); break;
          case SamplerId::kDpm2: out = SampleDpm2(ctx, x, sigmas); break;
          case SamplerId::kDpm2Ancestral: out = SampleDpm2Ancestral(ctx, x, sigmas); break;
          case SamplerId::kDpmFast:
            out = SampleDpmFast(ctx, x, dpm_min, dpm_max,
                                img2img ? static_cast<int>(sigmas.size()) - 1 : settings.steps);
            break;
          case SamplerId::kDpmAdaptive: out = SampleDpmAdaptive(ctx, x, dpm_min, dpm_max); break;
          case SamplerId::kRestart: out = SampleRestart(ctx, x, sigmas); break;
          case SamplerId::kLcm: out = SampleLcm(ctx, x, sigmas); break;
          default: return absl::InternalError(absl::StrCat("sampler ", sampler.name, " has no k-diffusion loop"));
        }
      }
    } catch (const SamplingStopped& stop) {
      if (!stop.status.ok()) return stop.status;
      result.interrupted = true;
      // Before any evaluation WebUI's last_latent is the start: the init latent for img2img, else the noise.
      if (denoiser.last_preview().defined()) {
        out = denoiser.last_preview();
      } else {
        out = img2img ? inputs.init_latent : x;
      }
    }
    // Inpainting: the original outside the mask, exactly (WebUI blends the samples once more after sampling).
    if (img2img && inputs.latent_keep.defined()) {
      const at::Tensor keep = inputs.latent_keep.to(out.device(), out.scalar_type());
      out = out * (1 - keep) + inputs.init_latent.to(out.device(), out.scalar_type()) * keep;
    }
    result.latent = out;
    result.model_calls = denoiser.model_calls();
    result.reported_steps = reported;
    return result;
  } catch (const std::exception& e) {
    return StatusFromException(e, absl::StrCat("sampling with ", sampler.name));
  }
}

}  // namespace atelier::engine
