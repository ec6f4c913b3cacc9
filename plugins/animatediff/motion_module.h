// AnimateDiff motion modules (guoyww's AnimateDiff as sd-webui-animatediff runs them, motion_module.py): one
// TemporalTransformer3DModel per UNet insertion point — GroupNorm(32, eps 1e-6), proj_in, one transformer block of
// two temporal self-attentions (LayerNorm, sinusoidal position encoding added to the normed input, 8 heads, no
// q/k/v bias) and a GEGLU feed-forward, proj_out, and the residual — attending across the frames of each video at
// every spatial position.
//
// Versions as the extension detects them (MotionModuleType.get_mm_type): v1 (24 positions, the UNet's GroupNorms
// normalise whole videos), v2 (32 positions, a module before the middle block's last ResBlock), v3 (32 positions, v1's
// keys), AnimateLCM (v2's keys without position encodings: 64 frames); AnimateDiff-XL and HotShot-XL are SDXL modules
// and refused on SD1.x. Names are the released files' ("down_blocks.0.motion_modules.0.temporal_transformer.norm.
// weight", ...); a "state_dict" wrapper and a "module." prefix are removed, the key set and every shape are checked.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::animatediff {

enum class MotionModuleVersion { kV1, kV2, kV3, kAnimateLcm, kAnimateDiffXl, kHotShotXl };
const char* VersionName(MotionModuleVersion version);

// The extension's detection from the key names and the position encoding's length.
MotionModuleVersion DetectVersion(const std::map<std::string, at::Tensor>& tensors);

// The fixed sinusoid of PositionalEncoding, float32 [1, positions, channels]: pe[p, 2i] = sin(p · e^(-2i ln(10000) /
// C)), pe[p, 2i + 1] = cos(...). The released files store it; AnimateLCM's do not.
at::Tensor PositionEncoding(int64_t positions, int64_t channels);

// The unet_block point (0..20, see atelier_unet_block_params) -> the module's name ("down_blocks.1.motion_modules.0",
// "mid_block.motion_modules.0", "up_blocks.0.motion_modules.2"). For a UNet of `levels` levels of `per_level`
// ResBlocks (SD1.x: 4 of 2), numbered as the UNet numbers its points: the down blocks' modules, the middle, then
// the up blocks' (per_level + 1 each).
std::string ModuleNameAt(int point, int levels = 4, int per_level = 2);
// The number of points of such a UNet: levels · per_level + 1 + levels · (per_level + 1) (21 in SD1.x).
int PointCount(int levels, int per_level);

// One TemporalTransformer3DModel's weights (names below "<module>.temporal_transformer.").
struct TemporalModule {
  std::map<std::string, at::Tensor> w;
  int64_t channels = 0;
  // to_q, to_k and to_v of each attention block stacked [3C, C]: one projection GEMM instead of three (FuseQkv).
  std::array<at::Tensor, 2> qkv;
  const at::Tensor& W(const std::string& name) const { return w.at(name); }
};

// Fills `module.qkv` from its weights (after loading or patching them).
void FuseQkv(TemporalModule& module);

// The temporal self-attention of every (video, position, head) on the CPU in float32, reading q, k and v where a
// projection left them (token (video · frames + f) · hw + position at row stride `stride`, head h at columns
// h · d ..) and writing the heads' outputs to `out` [tokens, heads · d] in the same order: no transposed copies and
// no small batched GEMMs. softmax(q kᵀ · scale) v per batch item, as the extension's scaled_dot_product_attention.
void TemporalAttentionCpu(const float* q, const float* k, const float* v, int64_t stride, float* out, int64_t videos,
                          int64_t frames, int64_t hw, int64_t heads, int64_t d, float scale);

// [(videos · frames), C, h, w] -> the same shape; `frames` rows in a row are one video (frame index fastest).
at::Tensor TemporalForward(const TemporalModule& module, const at::Tensor& hidden, int64_t frames);

class MotionModuleSet {
 public:
  // INVALID_ARGUMENT naming a missing, unexpected or mis-shaped tensor, or an SDXL / HotShot module on SD1.x.
  // Weights are converted to `dtype` on `device`. `version` overrides the detection (whose position-encoding test
  // cannot tell v1 from v3 when a module has 32 channels, as tiny test modules do).
  static absl::StatusOr<std::unique_ptr<MotionModuleSet>> FromTensors(
      std::map<std::string, at::Tensor> tensors, const std::string& label, const at::Device& device,
      at::ScalarType dtype, std::optional<MotionModuleVersion> version = std::nullopt);

  MotionModuleVersion version() const { return version_; }
  // The longest context the position encoding covers (24 v1, 32 v2 / v3, 64 AnimateLCM).
  int max_frames() const { return max_frames_; }
  // v1: the UNet's ResBlock / output GroupNorms normalise each video's frames jointly.
  bool group_norm_over_frames() const { return version_ == MotionModuleVersion::kV1; }
  // Whether a module sits at `point` (the middle block's only for v2 / AnimateLCM).
  bool HasPoint(int point) const {
    return point >= 0 && point < static_cast<int>(modules_.size()) && modules_[static_cast<size_t>(point)] != nullptr;
  }
  // The UNet shape the file is for, read from its names: 4 levels of 2 in the released SD1.x modules; the shipped
  // tiny module has the embedded model's 2 levels of 1.
  int levels() const { return levels_; }
  int per_level() const { return per_level_; }
  std::string ModuleName(int point) const { return ModuleNameAt(point, levels_, per_level_); }
  // Runs the module at `point` on hidden [(videos · frames), C, h, w]. INVALID_ARGUMENT when the rows are not whole
  // videos, the channels differ or `frames` exceeds max_frames().
  absl::StatusOr<at::Tensor> Forward(int point, const at::Tensor& hidden, int64_t frames) const;
  // "AnimateDiff motion module v2 (SD1.x), 21 modules".
  std::string Description() const;

  // A weight by its parameter name below the module ("transformer_blocks.0.attention_blocks.0.to_q.weight") at
  // `point`, or null.
  const at::Tensor* Weight(int point, const std::string& name) const;
  // Every weight's WebUI network-layer name (the dotted file name without ".weight", '.' -> '_', as
  // sd-webui-animatediff registers the injected modules for LoRA: "down_blocks_0_motion_modules_0_temporal_
  // transformer_transformer_blocks_0_attention_blocks_0_to_q") -> (point, parameter name). 2-D weights only.
  std::map<std::string, std::pair<int, std::string>> LayerNames() const;
  // A copy whose listed weights are W + delta (float32 sums cast to the weights' dtype); the others are shared.
  std::unique_ptr<MotionModuleSet> Patched(const std::map<std::pair<int, std::string>, at::Tensor>& deltas) const;

 private:
  MotionModuleVersion version_ = MotionModuleVersion::kV2;
  int max_frames_ = 32;
  int levels_ = 4, per_level_ = 2;
  std::vector<std::unique_ptr<TemporalModule>> modules_;  // by point
};

}  // namespace atelier::animatediff
