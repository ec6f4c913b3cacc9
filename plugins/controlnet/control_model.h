// A ControlNet (lllyasviel's cldm.ControlNet, as sd-webui-controlnet loads it) for SD1.x: the UNet's encoder half
// (engine::UNetEncoder, the engine's own blocks and names), the hint encoder (input_hint_block) and the 13 zero
// convolutions (zero_convs.0..11 after the input blocks, middle_block_out after the middle block).
//
// Files come in several layouts (../shared/manifests/controlnet-v11-sd15.json): v1.1 .pth (control_model.*), v1.0
// full checkpoints (control_model.* plus a whole SD model, which is ignored), fp16 safetensors repacks with or
// without the prefix, and diffusers' ControlNetModel names. NormalizeControlNetKeys brings all of them to the ldm
// names below control_model.; the key set is then checked exactly against what the architecture needs.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/models/sd_config.h"
#include "engine/models/unet.h"

namespace atelier::controlnet {

constexpr int kResiduals = engine::kUNetResiduals;  // 12 input-block skips + the middle block
using Residuals = std::array<at::Tensor, kResiduals>;

struct ControlNetConfig {
  engine::UNetConfig unet;  // the encoder half's shape
  int hint_channels = 3;    // 3 for image hints, 4 for inpaint models (RGB + mask)
  int hint_convs = 8;       // convolutions of input_hint_block (indices 0, 2, ..., 14)
};

// The ldm name (below control_model.) of a diffusers ControlNetModel tensor, or "" for a name outside that layout.
// `res_blocks` is the number of ResBlocks per level (2 for SD1.x).
std::string DiffusersToLdm(const std::string& name, int res_blocks);

// The tensors of any supported layout under their ldm names below control_model.: the prefix stripped (the rest of a
// v1.0 full checkpoint dropped), diffusers names mapped, 2-D proj_in/proj_out weights made 1x1 convolutions.
// INVALID_ARGUMENT naming the file (`label`) when it holds no ControlNet or another architecture's (SDXL, SD2.x).
absl::StatusOr<engine::WeightMap> NormalizeControlNetKeys(engine::WeightMap raw, const std::string& label);

// The architecture from the tensor shapes (SD1.5: 320 channels, mult 1,2,4,4, attention at 4,2,1; the fixtures'
// tiny nets have others). Heads are not stored in the file: 8, as sd-webui-controlnet assumes for SD1.x.
absl::StatusOr<ControlNetConfig> InferControlNetConfig(const engine::WeightMap& weights, const std::string& label);

// Every tensor name (below control_model.) with its shape for `config`, in a stable order.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> ControlNetParameterShapes(const ControlNetConfig& config);

class ControlNetModel {
 public:
  // Builds the net from normalized weights (NormalizeControlNetKeys), checking the exact key set and shapes: a
  // missing, unexpected or mis-shaped tensor is INVALID_ARGUMENT naming it and the file. Weights are converted to
  // `dtype` on `device` (no copy when they already are).
  static absl::StatusOr<std::unique_ptr<ControlNetModel>> Create(const engine::WeightMap& weights,
                                                                 const std::string& label, at::Device device,
                                                                 at::ScalarType dtype);
  ~ControlNetModel();

  // The hint encoder: hint [n, hint_channels, H, W] (float, [0,1]; inpaint hints -1 where masked) -> the guided
  // hint [n, model_channels, H/8, W/8] added after input block 0. It does not depend on the step: compute it once per
  // hint and size and reuse it.
  absl::StatusOr<at::Tensor> EncodeHint(const at::Tensor& hint) const;

  // The 13 raw residuals (zero-conv outputs) for x [B, 4, h, w], timesteps [B], context [B, tokens, dim] and a guided
  // hint [1 or B, model_channels, h, w]. Float32.
  absl::StatusOr<Residuals> Forward(const at::Tensor& x, const at::Tensor& timesteps, const at::Tensor& context,
                                    const at::Tensor& guided_hint) const;

  const ControlNetConfig& config() const { return config_; }
  at::Device device() const;
  at::ScalarType dtype() const;
  // Bytes of parameters held (what the LRU cache accounts).
  std::int64_t parameter_bytes() const;

 private:
  ControlNetModel() = default;
  ControlNetConfig config_;
  std::unique_ptr<engine::UNetEncoder> encoder_;
  std::vector<std::pair<at::Tensor, at::Tensor>> hint_convs_;  // weight, bias
  std::vector<std::pair<at::Tensor, at::Tensor>> zero_convs_;  // 12 + middle_block_out
  std::int64_t bytes_ = 0;
};

}  // namespace atelier::controlnet
