// Interpolating a stream of frames as Practical-RIFE's inference_video.py --multi does: between each pair, the
// frames at t = i/N (i = 1..N-1), unless the pair is a scene cut (thumbnail SSIM below the threshold), where the
// earlier frame is repeated instead of blended. n frames become (n-1)*N+1 (n*N with the loop closed).
#pragma once

#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "rife_model.h"

namespace atelier::rife {

// How many in-between frames each gap gets: `multiplier` - 1, or sd-webui-animatediff's interp_x rule for n frames
// (its FILM path: round((n * x - n) / (n - 1)) new frames per gap).
int GapFrames(int multiplier);
int AnimateDiffGapFrames(int frames, int interp_x);

struct SequenceOptions {
  int gap_frames = 1;             // new frames between two inputs
  double scale = 1.0;
  double scene_threshold = 0.2;   // SSIM below this: a cut (0 turns detection off)
};

class FrameInterpolator {
 public:
  // `emit(frame [1, 3, H, W], is_new, scene_cut)` receives the frames in order.
  using Emit = std::function<absl::Status(const at::Tensor& frame, bool interpolated, bool scene_cut)>;
  FrameInterpolator(const RifeModel& model, SequenceOptions options) : model_(model), options_(options) {}

  // The next input frame [1, 3, H, W] in [0, 1]: first the frames between the previous input and it, then itself.
  // INVALID_ARGUMENT when its size differs from the first frame's.
  absl::Status Add(const at::Tensor& frame, const Emit& emit);
  // Closes the loop: the frames between the last input and the first (a looping animation gets n*N frames).
  absl::Status CloseLoop(const Emit& emit);
  int inputs() const { return inputs_; }
  int cuts() const { return cuts_; }

 private:
  absl::Status Between(const at::Tensor& a, const at::Tensor& b, const Emit& emit);
  const RifeModel& model_;
  SequenceOptions options_;
  at::Tensor first_, previous_;
  int inputs_ = 0, cuts_ = 0;
};

}  // namespace atelier::rife
