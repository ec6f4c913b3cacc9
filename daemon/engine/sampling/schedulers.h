// WebUI's "Schedule type" (modules/sd_schedulers.py): the sigma schedule a k-diffusion sampler runs over, built
// as KDiffusionSampler.get_sigmas does (overrides of sigma_min/sigma_max/rho, discarding the next-to-last sigma),
// float for float.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/sampling/model_schedule.h"

namespace atelier::engine {

enum class Scheduler {
  kAutomatic,
  kUniform,
  kKarras,
  kExponential,
  kPolyexponential,
  kSgmUniform,
  kKlOptimal,
  kAlignYourSteps,
  kSimple,
  kNormal,
  kDdim,
  kBeta,
};

// One row of WebUI's sd_schedulers.schedulers (what /sdapi/v1/schedulers lists).
struct SchedulerInfo {
  Scheduler scheduler;
  const char* name;          // "sgm_uniform"
  const char* label;         // "SGM Uniform"
  const char* alias;         // "SGMUniform", or nullptr (WebUI's aliases list has at most this one)
  double default_rho;        // -1 when the schedule takes no rho
  bool need_inner_model;     // built from the model's own sigmas / timesteps
};

// Every scheduler in WebUI's order (Automatic first).
const std::vector<SchedulerInfo>& AllSchedulers();
const SchedulerInfo& SchedulerInfoOf(Scheduler scheduler);
const char* SchedulerName(Scheduler scheduler);
const char* SchedulerLabel(Scheduler scheduler);

// A scheduler's name ("karras"), label ("Karras") or alias ("SGMUniform"), case-insensitively. Anything else is
// INVALID_ARGUMENT listing the labels.
absl::StatusOr<Scheduler> ParseScheduler(absl::string_view name);

struct ScheduleOptions {
  // 0 = default: the model's sigma_min / sigma_max (WebUI opts sigma_min, sigma_max), the scheduler's default rho
  // (Karras 7, Polyexponential 1; others take none) (opts rho).
  double sigma_min = 0, sigma_max = 0, rho = 0;
  // Build for steps + 1 and drop the second-to-last sigma (DPM2, DPM2 a, DPM++ 3M SDE, or the option
  // always_discard_next_to_last_sigma).
  bool discard_next_to_last_sigma = false;
  // Beta schedule's distribution (opts beta_dist_alpha / beta_dist_beta).
  double beta_alpha = 0.6, beta_beta = 0.6;
  // The t-space Beta schedule of WebUI's dev branch; false = v1.10.1 (sigma interpolated linearly).
  bool beta_dev = false;
  // opts use_old_karras_scheduler_sigmas: sigma_min/sigma_max default to 0.1 / 10 instead of the model's.
  bool use_old_karras_scheduler_sigmas = false;
};

// k_diffusion.sampling.get_sigmas_karras(n, sigma_min, sigma_max, rho): n values and a trailing 0, float32 on the
// CPU (also what WebUI's Restart sampler builds its segments with).
at::Tensor KarrasSigmas(int n, double sigma_min, double sigma_max, double rho = 7.0);

// The schedule for `steps` sampling steps: float32 on the CPU, normally steps + 1 values ending in 0 (DDIM's
// length depends on whether steps divides the model's timestep count; KL Optimal ends in sigma_min). kAutomatic is
// the model's own get_sigmas (= kUniform); resolving a sampler's default schedule happens in the sampler table.
// steps < 1 is INVALID_ARGUMENT.
absl::StatusOr<at::Tensor> BuildSigmas(Scheduler scheduler, int steps, const ModelSchedule& model,
                                       const ScheduleOptions& options = {});

}  // namespace atelier::engine
