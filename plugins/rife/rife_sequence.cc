#include "rife_sequence.h"

#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace atelier::rife {

int GapFrames(int multiplier) { return multiplier - 1; }

int AnimateDiffGapFrames(int frames, int interp_x) {
  if (frames < 2) return 0;
  return static_cast<int>(std::lround((static_cast<double>(frames) * interp_x - frames) / (frames - 1)));
}

absl::Status FrameInterpolator::Between(const at::Tensor& a, const at::Tensor& b, const Emit& emit) {
  const bool cut = options_.scene_threshold > 0 && ThumbnailSsim(a, b) < options_.scene_threshold;
  if (cut) ++cuts_;
  const int n = options_.gap_frames;
  for (int i = 1; i <= n; ++i) {
    if (cut) {
      if (auto s = emit(a, true, true); !s.ok()) return s;
      continue;
    }
    auto mid = model_.InterpolatePadded(a, b, static_cast<double>(i) / (n + 1), options_.scale);
    if (!mid.ok()) return mid.status();
    if (auto s = emit(*mid, true, false); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status FrameInterpolator::Add(const at::Tensor& frame, const Emit& emit) {
  if (frame.dim() != 4 || frame.size(0) != 1 || frame.size(1) != 3) {
    return absl::InvalidArgumentError("RIFE: a frame must be [1, 3, H, W]");
  }
  if (previous_.defined()) {
    if (frame.sizes() != previous_.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("RIFE: frame ", inputs_, " is ", frame.size(3), "x", frame.size(2),
                                                     " but the first is ", first_.size(3), "x", first_.size(2),
                                                     ": frames to interpolate must have one size"));
    }
    if (auto s = Between(previous_, frame, emit); !s.ok()) return s;
  } else {
    first_ = frame;
  }
  previous_ = frame;
  ++inputs_;
  return emit(frame, false, false);
}

absl::Status FrameInterpolator::CloseLoop(const Emit& emit) {
  if (inputs_ < 2) return absl::OkStatus();
  return Between(previous_, first_, emit);
}

}  // namespace atelier::rife
