#include "engine/sampling/sampler_table.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace {

std::vector<SamplerInfo> BuildTable() {
  using S = SamplerId;
  std::vector<SamplerInfo> t;
  auto add = [&](SamplerId id, const char* name, std::vector<const char*> aliases,
                 std::optional<Scheduler> scheduler) -> SamplerInfo& {
    SamplerInfo info{id, name, std::move(aliases), scheduler};
    t.push_back(std::move(info));
    return t.back();
  };
  add(S::kDpmpp2m, "DPM++ 2M", {"k_dpmpp_2m"}, Scheduler::kKarras);
  {
    auto& s = add(S::kDpmppSde, "DPM++ SDE", {"k_dpmpp_sde"}, Scheduler::kKarras);
    s.second_order = s.brownian_noise = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpmpp2mSde, "DPM++ 2M SDE", {"k_dpmpp_2m_sde"}, Scheduler::kExponential);
    s.brownian_noise = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpmpp2mSdeHeun, "DPM++ 2M SDE Heun", {"k_dpmpp_2m_sde_heun"}, Scheduler::kExponential);
    s.brownian_noise = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpmpp2sAncestral, "DPM++ 2S a", {"k_dpmpp_2s_a"}, Scheduler::kKarras);
    s.uses_ensd = s.second_order = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpmpp3mSde, "DPM++ 3M SDE", {"k_dpmpp_3m_sde"}, Scheduler::kExponential);
    s.discard_next_to_last_sigma = s.brownian_noise = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kEulerAncestral, "Euler a", {"k_euler_a", "k_euler_ancestral"}, std::nullopt);
    s.uses_ensd = s.takes_eta = true;
  }
  {
    auto& s = add(S::kEuler, "Euler", {"k_euler"}, std::nullopt);
    s.takes_churn = s.takes_s_noise = true;
  }
  add(S::kLms, "LMS", {"k_lms"}, std::nullopt);
  {
    auto& s = add(S::kHeun, "Heun", {"k_heun"}, std::nullopt);
    s.second_order = s.takes_churn = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpm2, "DPM2", {"k_dpm_2"}, Scheduler::kKarras);
    s.discard_next_to_last_sigma = s.second_order = s.takes_churn = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpm2Ancestral, "DPM2 a", {"k_dpm_2_a"}, Scheduler::kKarras);
    s.discard_next_to_last_sigma = s.uses_ensd = s.second_order = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpmFast, "DPM fast", {"k_dpm_fast"}, std::nullopt);
    s.uses_ensd = s.takes_eta = s.takes_s_noise = true;
  }
  {
    auto& s = add(S::kDpmAdaptive, "DPM adaptive", {"k_dpm_ad"}, std::nullopt);
    s.uses_ensd = s.takes_eta = true;
  }
  add(S::kRestart, "Restart", {"restart"}, Scheduler::kKarras).second_order = true;
  {
    auto& s = add(S::kDdim, "DDIM", {"ddim"}, std::nullopt);
    s.timesteps = s.takes_eta = true;
  }
  {
    auto& s = add(S::kDdimCfgpp, "DDIM CFG++", {"ddim_cfgpp"}, std::nullopt);
    s.timesteps = s.takes_eta = true;
  }
  add(S::kPlms, "PLMS", {"plms"}, std::nullopt).timesteps = true;
  add(S::kUniPc, "UniPC", {"unipc"}, std::nullopt).timesteps = true;
  add(S::kLcm, "LCM", {"k_lcm"}, std::nullopt);
  return t;
}

std::string ValidNames() {
  std::vector<std::string> names;
  for (const auto& s : AllSamplers()) names.push_back(absl::StrCat("\"", s.name, "\""));
  return absl::StrJoin(names, ", ");
}

const SamplerInfo* FindByName(absl::string_view name) {
  for (const auto& s : AllSamplers()) {
    if (absl::EqualsIgnoreCase(name, s.name)) return &s;
    for (const char* alias : s.aliases) {
      if (absl::EqualsIgnoreCase(name, alias)) return &s;
    }
  }
  return nullptr;
}

}  // namespace

const std::vector<SamplerInfo>& AllSamplers() {
  static const std::vector<SamplerInfo> table = BuildTable();
  return table;
}

const SamplerInfo& SamplerById(SamplerId id) {
  for (const auto& s : AllSamplers()) {
    if (s.id == id) return s;
  }
  return AllSamplers().front();
}

absl::StatusOr<SamplerChoice> ResolveSampler(absl::string_view sampler_name, absl::string_view scheduler_name) {
  SamplerChoice choice;
  std::string name(absl::StripAsciiWhitespace(sampler_name));
  if (name.empty()) name = AllSamplers().front().name;

  if (!absl::StripAsciiWhitespace(scheduler_name).empty()) {
    auto scheduler = ParseScheduler(absl::StripAsciiWhitespace(scheduler_name));
    if (!scheduler.ok()) return scheduler.status();
    choice.scheduler = *scheduler;
  }
  choice.sampler = FindByName(name);
  if (choice.sampler == nullptr) {
    // A legacy combined name: "<sampler> <scheduler label, name or alias>".
    for (const SchedulerInfo& info : AllSchedulers()) {
      const Scheduler s = info.scheduler;
      std::vector<std::string> options{info.label, info.name};
      if (info.alias != nullptr) options.emplace_back(info.alias);
      for (const std::string& option : options) {
        if (name.size() > option.size() + 1 && absl::EndsWithIgnoreCase(name, absl::StrCat(" ", option))) {
          const SamplerInfo* found = FindByName(absl::string_view(name).substr(0, name.size() - option.size() - 1));
          if (found != nullptr) {
            choice.sampler = found;
            choice.scheduler = s;
          }
        }
      }
    }
  }
  if (choice.sampler == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown sampler ", Quoted(sampler_name, "\"", "\""), "; valid samplers: ", ValidNames(),
                     " (a schedule type may follow the name, e.g. \"DPM++ 2M Karras\")"));
  }
  if (choice.sampler->default_scheduler && *choice.sampler->default_scheduler == choice.scheduler) {
    choice.scheduler = Scheduler::kAutomatic;
  }
  return choice;
}

std::optional<Scheduler> EffectiveScheduler(const SamplerChoice& choice) {
  if (choice.scheduler != Scheduler::kAutomatic) return choice.scheduler;
  return choice.sampler->default_scheduler;
}

}  // namespace atelier::engine
