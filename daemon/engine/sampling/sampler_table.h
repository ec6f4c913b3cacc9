// WebUI's sampler list (names, aliases, options; /samplers order) and how a request's sampler_name and
// scheduler resolve, including the legacy combined names ("DPM++ 2M Karras", "DPM++ SDE Karras").
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/sampling/schedulers.h"

namespace atelier::engine {

enum class SamplerId {
  kDpmpp2m,
  kDpmppSde,
  kDpmpp2mSde,
  kDpmpp2mSdeHeun,
  kDpmpp2sAncestral,
  kDpmpp3mSde,
  kEulerAncestral,
  kEuler,
  kLms,
  kHeun,
  kDpm2,
  kDpm2Ancestral,
  kDpmFast,
  kDpmAdaptive,
  kRestart,
  kDdim,
  kDdimCfgpp,
  kPlms,
  kUniPc,
  kLcm,
};

struct SamplerInfo {
  SamplerId id;
  const char* name;
  std::vector<const char*> aliases;
  std::optional<Scheduler> default_scheduler;  // what "Automatic" means; none: the model's uniform schedule
  bool discard_next_to_last_sigma = false;
  bool second_order = false;   // two model calls per step (prompt-editing schedules count calls)
  bool brownian_noise = false;  // SDE samplers: Brownian-tree noise seeded per image (ENSD does not apply)
  bool uses_ensd = false;       // draws step noise from the per-image generators
  bool timesteps = false;       // DDIM/PLMS/UniPC/DDIM CFG++: integer timesteps, not sigmas
  bool takes_eta = false;       // WebUI passes eta (infotext "Eta"/"Eta DDIM" when not the default)
  bool takes_churn = false;     // s_churn/s_tmin/s_tmax
  bool takes_s_noise = false;   // WebUI's sampler_extra_params pass s_noise (not to Euler a, DPM adaptive, ...)
};

// In WebUI's /samplers order.
const std::vector<SamplerInfo>& AllSamplers();
const SamplerInfo& SamplerById(SamplerId id);

struct SamplerChoice {
  const SamplerInfo* sampler = nullptr;
  Scheduler scheduler = Scheduler::kAutomatic;
};

// Resolves (sampler_name, scheduler) as WebUI's get_sampler_and_scheduler does: a scheduler label/name/alias at
// the end of the sampler name is split off (when no scheduler is given or it is Automatic); a scheduler equal to
// the sampler's own default becomes Automatic. Names and aliases match case-insensitively. Empty sampler name:
// "DPM++ 2M" (WebUI's first sampler). Unknown names: INVALID_ARGUMENT listing the valid ones.
absl::StatusOr<SamplerChoice> ResolveSampler(absl::string_view sampler_name, absl::string_view scheduler_name);

// The schedule "Automatic" stands for with this sampler (for infotext "Schedule type").
std::optional<Scheduler> EffectiveScheduler(const SamplerChoice& choice);

}  // namespace atelier::engine
