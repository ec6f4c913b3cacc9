// sd-webui-animatediff's AnimateDiffProcess (scripts/animatediff_ui.py) as its API takes it:
//   "alwayson_scripts": {"AnimateDiff": {"args": [{"enable": true, "model": "mm_sd15_v3.safetensors", ...}]}}
// or the same fields positionally in the class's order. Defaults and names are the extension's; an unknown field
// is refused as AnimateDiffProcess(**dict) refuses it. `interp` also takes "RIFE" (this daemon's interpolation,
// handed to the rife plugin); "FILM" is UNIMPLEMENTED naming RIFE.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "context_schedule.h"

namespace atelier::animatediff {

struct AnimateDiffArgs {
  std::string model = "mm_sd15_v3.safetensors";
  bool enable = false;
  int video_length = 0;  // 0: the context batch size
  double fps = 8;
  int loop_number = 0;
  ClosedLoop closed_loop = ClosedLoop::kRMinusP;
  int batch_size = 16;   // context frames per motion-module pass
  int stride = 1;
  int overlap = -1;      // -1: batch_size / 4
  std::vector<std::string> format = {"GIF", "PNG"};
  std::string interp = "Off";  // "Off", "RIFE" (FILM is not available)
  int interp_x = 10;
  std::string video_source, video_path, mask_path;
  bool freeinit_enable = false;
  std::string freeinit_filter = "butterworth";
  double freeinit_ds = 0.25, freeinit_dt = 0.25;
  int freeinit_iters = 3;
  double latent_power = 1, latent_scale = 32;
  std::string last_frame;
  double latent_power_last = 1, latent_scale_last = 32;
  std::string request_id;
};

// The field names in AnimateDiffProcess's positional order.
const std::vector<std::string>& AnimateDiffFieldNames();

// One unit (a dict). INVALID_ARGUMENT naming the field for a wrong type or an unknown field (listing the valid
// ones; a bad FreeInit filter, iteration count or cut-off, a non-positive latent_scale); UNIMPLEMENTED for FILM
// interpolation.
absl::StatusOr<AnimateDiffArgs> ParseAnimateDiffArgs(const nlohmann::json& unit);

// Resolves video_length (0 -> batch_size; a shorter video makes batch_size its length) and overlap (-1 -> batch_size / 4) and checks the ranges against the motion
// module's longest context (`max_context`) and the daemon's longest video (`max_frames`); INVALID_ARGUMENT naming
// the field otherwise.
absl::Status ResolveAnimateDiffArgs(AnimateDiffArgs& args, int max_context, int max_frames);

// The infotext value of key "AnimateDiff" (animatediff_ui.py get_dict), after ResolveAnimateDiffArgs:
// "model: mm.safetensors, video_length: 16, fps: 8, loop_number: 0, closed_loop: R-P, batch_size: 16, stride: 1,
// overlap: 4, interp: Off, interp_x: 10, freeinit_enable: False[, request_id: x][, mm_hash: 1a2b3c4d]" and, for
// img2img, ", latent_power: 1, latent_scale: 32, latent_power_last: 1, latent_scale_last: 32".
std::string AnimateDiffInfotext(const AnimateDiffArgs& args, const std::string& mm_hash, bool img2img = false);

}  // namespace atelier::animatediff
