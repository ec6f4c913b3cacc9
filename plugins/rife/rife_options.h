// The rife plugin's arguments: {"enabled": true, "multiplier": 2, "scale": 1, "scene_threshold": 0.2, "loop": false,
// "model": "..."}, or sd-webui-animatediff's {"interp": "RIFE", "interp_x": 10}. Any JSON value gives options or
// INVALID_ARGUMENT naming the field, never an exception (fuzz/plugin_args_fuzz.cc).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace atelier::rife {

struct Options {
  bool enabled = false;
  std::string model;
  int multiplier = 2;       // N: N - 1 new frames per gap
  int interp_x = 0;         // > 0: sd-webui-animatediff's rule (set when asked with "interp")
  double scale = 1.0;
  double scene_threshold = 0.2;
  bool loop = false;        // also between the last frame and the first
};

absl::StatusOr<Options> ParseOptions(const nlohmann::json& j, int max_multiplier);

}  // namespace atelier::rife
