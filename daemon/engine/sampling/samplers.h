// Sampling as WebUI drives it: the schedule a sampler gets (sigmas or timesteps), the txt2img / img2img start,
// the sampler loop over the CFG denoiser, progress, interruption (the last x0 is returned) and errors.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/sampling/cfg_denoiser.h"
#include "engine/sampling/model_schedule.h"
#include "engine/sampling/noise.h"
#include "engine/sampling/sampler_kernels.h"
#include "engine/sampling/sampler_table.h"
#include "engine/sampling/schedulers.h"

namespace atelier::engine {

constexpr int kDefaultMaxSteps = 1000;

struct SamplingSettings {
  SamplerChoice choice;  // from ResolveSampler
  int steps = 20;
  double cfg_scale = 7.0;
  // Unset: WebUI's option default for the sampler kind (eta_ancestral 1.0 for k-diffusion samplers, eta_ddim 0.0
  // for the timestep samplers).
  std::optional<double> eta;
  double s_churn = 0, s_tmin = 0, s_tmax = 0 /* 0 = infinity */, s_noise = 1.0;
  ScheduleOptions schedule;  // sigma_min/max/rho overrides, discard_next_to_last_sigma, Beta parameters
  UniPcOptions unipc;
  bool sgm_noise_multiplier = false;  // txt2img start x * sqrt(1 + sigma0^2) instead of x * sigma0
  bool quantize = false;              // WebUI's enable_quantization: integer timesteps for k-diffusion samplers
  // img2img (init_latent given): denoising strength and WebUI's "img2img_fix_steps".
  double denoising_strength = 0.75;
  bool img2img_fix_steps = false;
  int max_steps = kDefaultMaxSteps;
};

// INVALID_ARGUMENT for steps outside [1, max_steps], non-finite CFG scale, denoising strength outside [0, 1],
// negative or non-finite eta / s_noise / s_churn, with the valid range in the message.
absl::Status ValidateSamplingSettings(const SamplingSettings& settings);

// WebUI's randn_like during sampling: the next draw of the job's per-image generators (ENSD applied by the rng).
NoiseSampler StepNoiseFrom(ImageRng* rng);

// Brownian-tree noise for the SDE samplers over [sigma_min, sigma_max] of the full schedule.
using BrownianNoiseFactory = std::function<NoiseSampler(double sigma_min, double sigma_max)>;

struct SamplingInputs {
  EpsModel model;
  CfgConditioning conditioning;
  at::Tensor noise;         // [images, 4, h, w]: the seed's initial noise (ImageRng's first draw)
  NoiseSampler step_noise;  // WebUI's randn_like: the next draw of the per-image generators
  // Brownian noise for the SDE samplers; empty: a BrownianTreeNoise seeded with `seeds`.
  BrownianNoiseFactory brownian_noise;
  std::vector<uint64_t> seeds;  // per image
  at::Tensor init_latent;       // img2img: the encoded image [images, 4, h, w]; undefined for txt2img
  // Inpainting: 1 where the original latent is kept [1 or images, 1 or 4, h, w]; blended every step and at the end.
  at::Tensor latent_keep;
  std::function<bool()> interrupt;  // polled before every model evaluation (see CfgDenoiserOptions)
  JobExtension* extension = nullptr;  // the job's extension points (may be null)
  ProgressCallback progress;
};

struct SamplingResult {
  at::Tensor latent;  // UNet space
  bool interrupted = false;
  at::Tensor sigmas;              // the schedule the k-diffusion sampler ran over (img2img: the used tail)
  std::vector<int> timesteps;     // timestep samplers
  int model_calls = 0;            // denoiser evaluations
  int reported_steps = 0;         // progress callbacks
  double eta = 0;                 // the eta used (infotext)
};

// WebUI's KDiffusionSampler.get_sigmas for this sampler (Automatic resolved, discard rule applied), float32.
absl::StatusOr<at::Tensor> SamplerSigmas(const SamplingSettings& settings, const ModelSchedule& schedule);
// WebUI's CompVisSampler.get_timesteps: clip(arange(0, 1000, 1000 // steps) + 1, 0, 999).
std::vector<int> SamplerTimesteps(const SamplingSettings& settings);
// Steps and t_enc of an img2img run (WebUI's setup_img2img_steps).
std::pair<int, int> Img2ImgSteps(const SamplingSettings& settings);

// Runs the sampler. `schedule` is the checkpoint's (the LCM sampler derives its own from it). Interruption
// returns OK with interrupted = true and the last x0 of each image's first conditional row.
absl::StatusOr<SamplingResult> Sample(const SamplingSettings& settings, const ModelSchedule& schedule,
                                      SamplingInputs inputs);

}  // namespace atelier::engine
