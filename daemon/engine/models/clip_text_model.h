// The CLIP ViT-L/14 text tower of SD 1.x checkpoints (Hugging Face CLIPTextModel layout, as stored under
// cond_stage_model.transformer.): token + position embedding, pre-LayerNorm blocks with causal multi-head
// self-attention and QuickGELU MLP, final LayerNorm. Module members are named after the checkpoint keys
// ("text_model.encoder.layers.0.self_attn.q_proj.weight", ...), so loading is a direct match.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/models/sd_config.h"

namespace atelier::engine {

// A textual-inversion embedding placed into one row of a token batch: its vectors replace the token embeddings
// from position `offset` + 1 on (WebUI's EmbeddingsWithFixes; +1 skips the start token).
struct EmbeddingFix {
  int offset = 0;
  at::Tensor vectors;  // [n, hidden]
};

class ClipTextModel {
 public:
  // Builds the model and takes its weights from `weights` (names below cond_stage_model.transformer.; both the
  // text_model.* and the older naming are accepted). Weights are shared, not copied. Errors name the missing or
  // mis-shaped tensor.
  static absl::StatusOr<std::unique_ptr<ClipTextModel>> Create(const ClipTextConfig& config, const WeightMap& weights);
  ~ClipTextModel();

  // Every parameter and buffer name (as in checkpoints, below cond_stage_model.transformer.) with its shape.
  static std::vector<std::pair<std::string, std::vector<std::int64_t>>> ParameterShapes(const ClipTextConfig& config);

  // ids: int64 [batch, tokens]. clip_skip 1 gives the last hidden state; N > 1 gives the output of the block N-1
  // before the last, through the final LayerNorm (WebUI's "Clip skip"). Result [batch, tokens, hidden], float32
  // (or the weights' dtype). `fixes` (one list per batch row, may be empty) inserts embedding vectors.
  at::Tensor Encode(const at::Tensor& ids, int clip_skip,
                    const std::vector<std::vector<EmbeddingFix>>& fixes = {}) const;

  // Embedding output and every block's output, without the final LayerNorm (HF output_hidden_states).
  std::vector<at::Tensor> HiddenStates(const at::Tensor& ids) const;
  at::Tensor FinalLayerNorm(const at::Tensor& hidden) const;

  const ClipTextConfig& config() const { return config_; }

  // Patching weights in place of the model (LoRA): the live tensor of parameter `name` (its module path + ".weight",
  // the checkpoint's names below the model's prefix), and replacing it for every later forward. Giving back the
  // tensor read before restores the model exactly. NOT_FOUND for an unknown name, INVALID_ARGUMENT for a shape change.
  absl::StatusOr<at::Tensor> Parameter(const std::string& name) const;
  absl::Status ReplaceParameter(const std::string& name, const at::Tensor& value);
 private:
  struct Impl;
  explicit ClipTextModel(const ClipTextConfig& config);
  ClipTextConfig config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace atelier::engine
