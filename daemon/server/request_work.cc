#include "server/request_work.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "engine/pipeline/hires_fix.h"
#include "util/limits.h"

namespace atelier::server {

int AnimateDiffFrames(const jobs::JobSettings& settings) {
  const auto it = settings.plugin_args.find("animatediff");
  if (it == settings.plugin_args.end()) return 0;
  const nlohmann::json value = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* args = value.is_object() && value.contains("args") ? &value["args"] : &value;
  if (!args->is_array() || args->empty() || !(*args)[0].is_object()) return 0;
  const nlohmann::json& unit = (*args)[0];
  const auto number = [&unit](const char* key, int fallback) {
    const auto found = unit.find(key);
    return found != unit.end() && found->is_number() ? found->get<double>() : fallback;
  };
  const auto enable = unit.find("enable");
  if (enable != unit.end() && enable->is_boolean() && !enable->get<bool>()) return 0;
  const double length = number("video_length", 0);
  const double frames = length > 0 ? length : number("batch_size", 16);
  return static_cast<int>(std::clamp(frames, 1.0, 1e6));
}

double MegapixelSteps(const jobs::JobSettings& settings) {
  const engine::GenerationParams& p = settings.params;
  const int frames = AnimateDiffFrames(settings);
  const double images = static_cast<double>(frames > 0 ? frames : p.batch_size) * p.n_iter;
  const int steps = p.sampling.steps;
  double work = p.width / 1e6 * p.height * steps * images;
  if (p.hires.enabled) {
    auto target = engine::HiresTargetSize(p.width, p.height, p.hires, kMaxImageSide);
    if (target.ok()) {
      const int hr_steps = p.hires.second_pass_steps > 0 ? p.hires.second_pass_steps : steps;
      work += target->width / 1e6 * target->height * hr_steps * images;
    }
  }
  return work;
}

}  // namespace atelier::server
