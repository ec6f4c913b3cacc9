// sd-webui-animatediff's context windows (scripts/animatediff_infv2v.py `uniform`): which frames each UNet call of a
// denoiser step covers when the video is longer than the context. Windows of `context` frames advance by
// context - overlap, shifted each step by ordered halving of the step (0, 1/2, 1/4, 3/4, ...), at strides 1, 2, 4, ...
// up to `stride`; closed_loop "N" keeps windows from wrapping around the end, "A" adds wrapping windows, "R-P" / "R+P"
// wrap (they differ only in prompt travel). Overlapping windows are not averaged: the last window to cover a frame
// writes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace atelier::animatediff {

enum class ClosedLoop { kN, kRMinusP, kRPlusP, kA };
// "N", "R-P", "R+P", "A"; INVALID_ARGUMENT naming them for anything else.
absl::StatusOr<ClosedLoop> ParseClosedLoop(const std::string& text);
const char* ClosedLoopName(ClosedLoop loop);

// int(f"{step:064b}"[::-1], 2) / 2**64.
double OrderedHalving(uint64_t step);

// The windows of denoiser call `step` for `frames` frames: lists of `context` frame indices (a window may repeat a
// frame when the video is short). frames <= context: one window 0..context-1.
std::vector<std::vector<int>> ContextWindows(uint64_t step, int frames, int context, int stride, int overlap,
                                             ClosedLoop loop);

}  // namespace atelier::animatediff
