// RIFE IFNet (Practical-RIFE, hzwer) for frame interpolation: the 4.6 architecture (4 IFBlocks, the mask
// accumulated) and the 4.25 / 4.26 one (a feature Head, 5 IFBlocks passing features on, the mask replaced), with
// the released flownet.pkl names (the "module." prefix stripped). Block widths are read from the tensor shapes.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::rife {

using WeightMap = std::map<std::string, at::Tensor>;

enum class Architecture { kV46, kV425 };

// Intermediate values of one forward, for tests.
struct RifeTrace {
  std::vector<at::Tensor> block_flow;  // what each block returned (block 0: the flow; later: the increment)
  std::vector<at::Tensor> block_mask;  // each block's mask logit
  at::Tensor head0;                    // 4.25: Head(img0)
};

class RifeModel {
 public:
  // Weights with or without "module." (extra keys of a training checkpoint are ignored, as Practical-RIFE's
  // strict=False load does). INVALID_ARGUMENT naming the file for a missing or mis-shaped tensor or an unknown
  // architecture.
  static absl::StatusOr<std::unique_ptr<RifeModel>> Create(const WeightMap& weights, const std::string& label,
                                                           at::Device device, at::ScalarType dtype);

  // The frame at time t in (0, 1) between img0 (t = 0) and img1 (t = 1): [N, 3, H, W] in [0, 1] -> same shape.
  // H and W must be multiples of Multiple(scale) (Pad does that); `scale` 1.0 normally, 0.5 for 4K, 2.0 (4.25).
  absl::StatusOr<at::Tensor> Interpolate(const at::Tensor& img0, const at::Tensor& img1, double t, double scale,
                                         RifeTrace* trace = nullptr) const;

  // The multiple Practical-RIFE's inference_video.py pads to: max(128, int(128 / scale)).
  static int64_t PadMultiple(double scale);
  // Zero-pads right/bottom to PadMultiple(scale), interpolates, crops back: what a front-end calls.
  absl::StatusOr<at::Tensor> InterpolatePadded(const at::Tensor& img0, const at::Tensor& img1, double t,
                                               double scale) const;

  Architecture architecture() const { return arch_; }
  std::string version() const { return arch_ == Architecture::kV46 ? "4.6" : "4.25"; }
  const std::vector<int64_t>& widths() const { return widths_; }

 private:
  struct Conv {
    at::Tensor weight, bias;
  };
  struct Block {
    Conv conv0a, conv0b;
    std::vector<std::pair<Conv, at::Tensor>> res;  // conv, beta
    Conv last;                                     // ConvTranspose2d(c, 4 * out, 4, 2, 1)
  };
  RifeModel() = default;
  absl::StatusOr<at::Tensor> InterpolateOrThrow(const at::Tensor& img0, const at::Tensor& img1, double t, double scale,
                                                RifeTrace* trace) const;
  // One IFBlock: (x, flow) at 1/s -> tmp [N, out, H, W] at the input's resolution.
  at::Tensor RunBlock(const Block& b, const at::Tensor& x, const at::Tensor& flow, double s) const;

  Architecture arch_ = Architecture::kV46;
  std::vector<Block> blocks_;
  std::vector<int64_t> widths_;
  Conv head_[4];  // 4.25 encode.cnn0..3
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
};

// Backward warp as Practical-RIFE's warplayer: sample `image` at (x + flow_x, y + flow_y), bilinear, border.
at::Tensor Warp(const at::Tensor& image, const at::Tensor& flow);

// Practical-RIFE's scene-change test on two frames: SSIM of the 32x32 bilinear thumbnails (RGB, [0, 1]).
double ThumbnailSsim(const at::Tensor& img0, const at::Tensor& img1);

}  // namespace atelier::rife
