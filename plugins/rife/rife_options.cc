#include "rife_options.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace atelier::rife {
namespace {

// A whole number in [lo, hi] from a JSON number, or nothing (non-numbers, fractions, out of range: no UB casting).
bool WholeNumber(const nlohmann::json& v, int lo, int hi, int& out) {
  if (!v.is_number()) return false;
  const double x = v.get<double>();
  if (!std::isfinite(x) || x != std::floor(x) || x < lo || x > hi) return false;
  out = static_cast<int>(x);
  return true;
}

absl::StatusOr<bool> Flag(const nlohmann::json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) return absl::InvalidArgumentError(absl::StrCat("rife: ", key, " must be true or false"));
  return j[key].get<bool>();
}

}  // namespace

absl::StatusOr<Options> ParseOptions(const nlohmann::json& j, int max_multiplier) {
  Options o;
  if (!j.is_object()) return absl::InvalidArgumentError("rife: the arguments must be an object");
  auto enabled = Flag(j, "enabled", false);
  if (!enabled.ok()) return enabled.status();
  o.enabled = *enabled;
  if (j.contains("interp") && j["interp"].is_string()) {
    const std::string interp = absl::AsciiStrToUpper(j["interp"].get<std::string>());
    if (interp == "FILM") {
      return absl::UnimplementedError("interpolation \"FILM\" is not available here; use \"RIFE\" (interp: \"RIFE\")");
    }
    if (interp == "RIFE") {
      o.enabled = true;
      o.interp_x = 10;
      if (j.contains("interp_x") && !WholeNumber(j["interp_x"], 2, 64, o.interp_x)) {
        return absl::InvalidArgumentError("rife: interp_x must be a whole number 2..64");
      }
    } else if (interp != "OFF") {
      return absl::InvalidArgumentError(absl::StrCat("rife: interp '", interp.substr(0, 16), "' is not Off, RIFE or FILM"));
    }
  }
  if (j.contains("multiplier")) {
    const nlohmann::json& m = j["multiplier"];
    if (!m.is_number() || !std::isfinite(m.get<double>()) || m.get<double>() != std::floor(m.get<double>())) {
      return absl::InvalidArgumentError("rife: multiplier must be a whole number");
    }
    if (!WholeNumber(m, 2, max_multiplier, o.multiplier)) {
      return absl::InvalidArgumentError(absl::StrCat("rife: multiplier ", m.get<double>(), " is outside 2..",
                                                     max_multiplier, " (ATELIER_RIFE_MAX_MULTIPLIER)"));
    }
  }
  if (j.contains("scale") && j["scale"].is_number()) o.scale = j["scale"].get<double>();
  if (o.scale != 0.25 && o.scale != 0.5 && o.scale != 1.0 && o.scale != 2.0 && o.scale != 4.0) {
    return absl::InvalidArgumentError("rife: scale must be 0.25, 0.5, 1, 2 or 4");
  }
  if (j.contains("scene_threshold") && j["scene_threshold"].is_number()) {
    o.scene_threshold = j["scene_threshold"].get<double>();
  }
  if (!(o.scene_threshold >= 0 && o.scene_threshold <= 1)) {
    return absl::InvalidArgumentError("rife: scene_threshold must be 0..1");
  }
  auto loop = Flag(j, "loop", false);
  if (!loop.ok()) return loop.status();
  o.loop = *loop;
  if (j.contains("model") && j["model"].is_string()) o.model = j["model"].get<std::string>();
  return o;
}

}  // namespace atelier::rife
