// The SD1.x denoising UNet (LDM openaimodel.UNetModel with SpatialTransformer), as stored under
// model.diffusion_model.*: module members are named after the checkpoint keys (time_embed, input_blocks.N.M,
// middle_block, output_blocks, out), so loading is a direct match. Also the inpainting variant (9 input channels).
//
// Extension points for plugins (ControlNet, AnimateDiff), free when unused: 13 residuals added to the 12 skip
// connections and the middle block's output, and 21 points where the hidden state can be transformed.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/models/sd_config.h"

namespace atelier::engine {

constexpr int kUNetResiduals = 13;    // 12 skips (input block order) + the middle block's output
constexpr int kUNetBlockPoints = 21;  // AnimateDiff's insertion points

enum class UNetBlockKind { kInput = 0, kMiddle = 1, kOutput = 2 };

// One of the 21 points: after input blocks 1,2,4,5,7,8,10,11 (points 0..7); before the middle block's last
// ResBlock (8); at the end of output blocks 0..11, before the upsampler in blocks 2, 5 and 8 (9..20). A UNet of
// another shape (L levels of R ResBlocks, as the embedded model) numbers them the same way: after each of its L·R
// ResBlock input blocks (0..L·R-1), the middle (L·R), then each of its L·(R+1) output blocks.
struct UNetBlockPoint {
  int point = 0;
  UNetBlockKind kind = UNetBlockKind::kInput;
  int index = 0;  // within input_blocks / output_blocks; 0 for the middle block
};

// Replaces `hidden` ([rows, channels, h, w], the UNet's dtype) with a tensor of the same shape, or fails the call.
using UNetBlockHook = std::function<absl::Status(const UNetBlockPoint& where, at::Tensor& hidden)>;

// Reference attention (sd-webui-controlnet's reference_only): at every BasicTransformerBlock's self-attention, in
// forward order (`layer` 0..N-1; 16 for SD1.x), with its input norm1(x) [rows, tokens, channels] (the UNet's dtype).
// A returned `context` [rows, tokens', channels] is appended to the keys and values (tokens concatenated); a returned
// `plain_weight` [rows] mixes each row's output as w * attn(x, x) + (1 - w) * attn(x, [x, context]). Nothing
// returned leaves the attention exactly as without the hook.
struct SelfAttentionExtra {
  at::Tensor context;
  at::Tensor plain_weight;
};
using SelfAttentionHook = std::function<absl::StatusOr<SelfAttentionExtra>(int layer, const at::Tensor& hidden)>;

// The output of every whole block (input blocks 0..11, the middle block, output blocks 0..11, in forward order),
// which the hook may replace with a tensor of the same shape (reference_adain's statistics).
using UNetBlockEndHook = std::function<absl::Status(UNetBlockKind kind, int index, at::Tensor& hidden)>;

// Intermediate values of one forward, for tests and debugging.
struct UNetTrace {
  at::Tensor t_emb, emb;
  std::vector<at::Tensor> input_blocks, output_blocks;
  at::Tensor middle_block;
};

struct UNetCallOptions {
  // Added to the skips and the middle output; undefined entries add nothing. Shapes must match.
  const std::array<at::Tensor, kUNetResiduals>* residuals = nullptr;
  UNetBlockHook block_hook;  // empty: no hook
  SelfAttentionHook attention_hook;  // empty: no hook
  UNetBlockEndHook block_end_hook;   // empty: no hook
  // > 0: the ResBlock and output GroupNorms normalise every run of this many batch rows jointly (AnimateDiff v1).
  int frames_per_video = 0;
  UNetTrace* trace = nullptr;
};

class UNet {
 public:
  // Builds the UNet for `config` and takes its weights from `weights` (names below model.diffusion_model.;
  // shared, not copied). Missing, unexpected or mis-shaped tensors are an error naming them.
  static absl::StatusOr<std::unique_ptr<UNet>> Create(const UNetConfig& config, const WeightMap& weights);
  ~UNet();

  // Every parameter name (below model.diffusion_model.) with its shape, for `config`.
  static std::vector<std::pair<std::string, std::vector<std::int64_t>>> ParameterShapes(const UNetConfig& config);

  // eps = UNet(x, timesteps, context). x [B, in_channels, h, w] (any h, w: mismatched skip sizes are matched as
  // WebUI does), timesteps [B] float (fractional allowed), context [B, tokens, context_dim] with any token count.
  // Computes in the weights' dtype; returns float32. INVALID_ARGUMENT for inconsistent shapes.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& x, const at::Tensor& timesteps, const at::Tensor& context,
                                     const UNetCallOptions& options = {}) const;

  // Patching weights in place of the model (LoRA): the live tensor of parameter `name` (its module path + ".weight",
  // the checkpoint's names below the model's prefix), and replacing it for every later forward. Giving back the
  // tensor read before restores the model exactly. NOT_FOUND for an unknown name, INVALID_ARGUMENT for a shape change.
  absl::StatusOr<at::Tensor> Parameter(const std::string& name) const;
  absl::Status ReplaceParameter(const std::string& name, const at::Tensor& value);
  const UNetConfig& config() const { return config_; }
  at::ScalarType dtype() const;
  // The attention kernel the forward uses on this model's device, for the log.
  std::string attention_kind() const;

  // The sinusoidal timestep embedding (cos half first), float32 [B, dim].
  static at::Tensor TimestepEmbedding(const at::Tensor& timesteps, int64_t dim);

 private:
  struct Impl;
  explicit UNet(const UNetConfig& config);
  UNetConfig config_;
  std::unique_ptr<Impl> impl_;
};

// The UNet's encoder half as a model of its own: time_embed, the 12 input blocks and the middle block, with the
// UNet's names and code. A ControlNet (control_model.*) is this plus its hint encoder and zero convolutions, so a
// ControlNet plugin builds on it through the plugin SDK instead of re-writing the blocks.
class UNetEncoder {
 public:
  struct Output {
    std::vector<at::Tensor> input_blocks;  // the 12 input blocks' outputs (the UNet's skips), in order
    at::Tensor middle_block;
  };

  // Takes the tensors named time_embed.*, input_blocks.* and middle_block.* from `weights` (prefix already
  // stripped); every other name is left to the caller (a ControlNet's zero_convs, input_hint_block,
  // middle_block_out). Missing or mis-shaped ones are an error naming them (`what` + "." + name).
  static absl::StatusOr<std::unique_ptr<UNetEncoder>> Create(const UNetConfig& config, const WeightMap& weights,
                                                             const std::string& what);
  ~UNetEncoder();

  // The encoder pass of UNet::Forward on the same inputs (the same numbers); `after_first` (optional, the shape of
  // input block 0's output) is added after input block 0, where a ControlNet adds its guided hint. Outputs are in
  // the weights' dtype.
  absl::StatusOr<Output> Forward(const at::Tensor& x, const at::Tensor& timesteps, const at::Tensor& context,
                                 const at::Tensor& after_first = at::Tensor(), int frames_per_video = 0) const;

  const UNetConfig& config() const { return config_; }

 private:
  struct Impl;
  explicit UNetEncoder(const UNetConfig& config);
  UNetConfig config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace atelier::engine
