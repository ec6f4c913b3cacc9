// Layers shared by the image models, with parameters named as in LDM checkpoints ("weight", "bias"). Included by
// model .cc files only (it pulls in <torch/torch.h>). Parameters start uninitialised: the model code always takes
// them from a checkpoint (LoadWeights), so building a full-size model costs no random initialisation.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace atelier::engine {

// Conv2d with square kernel, stride and zero padding (LDM's conv_nd(2, ...)). Inputs stay NCHW-contiguous: libtorch
// 1.13's channels-last path copies the weight on every call. (Pre-packing the weight for oneDNN would save 1.6-1.8x
// on the 1280-channel convolutions at 8x8/16x16 but duplicates the weights; not done.)
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;
  // A 1x1 convolution applied to channels-last tokens [..., in] -> [..., out], as a matrix product (faster than the
  // NCHW 1x1 convolution, and it keeps the caller's tensors in the standard layout).
  at::Tensor ForwardTokens(const at::Tensor& tokens) const;
  // This 3x3 convolution (stride 1, padding 1) of x upsampled 2x by nearest neighbour (LDM's Upsample), without
  // making the upsampled tensor on the CPU: each output pixel parity (a, b) is a 2x2 convolution of x whose taps
  // sum the 3x3 taps that fall on the same source pixel. 16 instead of 36 multiply-adds per channel pair and source
  // pixel, and no 4x-sized input (the VAE's last upsample: 134 MB in bfloat16 at 512x512; a 512x512 float32 decode
  // 8% faster). The combined taps (16/9 of the weight) are summed in float32 and made once per weight (its data and
  // version), so a patched or replaced weight rebuilds them.
  at::Tensor ForwardUpsampled2x(const at::Tensor& x) const;

  at::Tensor weight, bias;

 private:
  struct UpsampleTaps {
    std::mutex mu;
    const void* data = nullptr;
    int64_t version = -1;
    at::ScalarType dtype = at::kFloat;
    at::Tensor taps[2][2];
  };

  int64_t stride_, padding_;
  std::shared_ptr<UpsampleTaps> upsample_taps_ = std::make_shared<UpsampleTaps>();
};
TORCH_MODULE(Conv2d);

// y = x W^T + b.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;

  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

// GroupNorm with affine weight/bias, always computed in float32 (LDM's GroupNorm32; the SpatialTransformer's
// plain GroupNorm gives the same numbers in float32). `frames` > 0 normalises every run of `frames` batch rows
// jointly (sd-webui-animatediff v1's GroupNorm hack: [(b f), C, H, W] is normalised as [b, C, f, H, W]).
// GEGLU of a projection [..., 2 * width]: first half * gelu(second half) (erf gelu), in one pass on AVX-512 CPUs.
at::Tensor Geglu(const at::Tensor& projection);

class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(int64_t channels, double eps, int64_t groups = 32);
  // `silu`: silu(GroupNorm(x)) in the same pass where the fused kernel runs (channels-last float32/bfloat16 on an
  // AVX-512 CPU: statistics and arithmetic in float32, one read and one write of the activation).
  at::Tensor forward(const at::Tensor& x, int64_t frames = 0, bool silu = false) const;

  at::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm);

// GroupNorm statistics shared between calls: while a GroupNormStatsScope is active on this thread, every GroupNorm
// forward either records its per-(row, group) mean and inverse std (in call order) or replays the recorded ones in
// the same order instead of computing its own. Tiled VAE runs record on a downscaled whole image and replay in
// every tile, so all tiles normalise alike (no seams or colour shifts between tiles).
struct GroupNormStats {
  bool recording = true;
  std::vector<std::pair<at::Tensor, at::Tensor>> mean_rstd;  // [rows, groups] each, float32
  size_t next = 0;  // replay position
};

class GroupNormStatsScope {
 public:
  explicit GroupNormStatsScope(GroupNormStats* stats);
  ~GroupNormStatsScope();
  GroupNormStatsScope(const GroupNormStatsScope&) = delete;
  GroupNormStatsScope& operator=(const GroupNormStatsScope&) = delete;

 private:
  GroupNormStats* previous_;
};

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t channels, double eps);
  at::Tensor forward(const at::Tensor& x) const;

  at::Tensor weight, bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

}  // namespace atelier::engine
