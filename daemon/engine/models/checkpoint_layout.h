// What a model file is, from its tensor names and shapes: an SD1.x checkpoint (normal or inpainting), a VAE, a
// textual-inversion embedding, a ControlNet, an AnimateDiff motion module, RIFE, TAESD. Other Stable Diffusion
// generations (SD2.x, SDXL, SD3/Flux) are recognised and refused with an "unsupported architecture" error.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/io/tensor_index.h"

namespace atelier::engine {

enum class ModelType { kSd1Checkpoint, kVae, kEmbedding, kControlNet, kMotionModule, kRife, kTaesd };

struct Layout {
  ModelType type = ModelType::kSd1Checkpoint;
  // For people and the Models API: "SD1.x", "SD1.x inpainting", "VAE", "ControlNet (SD1.x)", ...
  std::string architecture;
  // Sub-kind: ControlNet "control_model." / "stripped" / "diffusers"; motion module "v1"/"v2"/"v3"/"AnimateLCM";
  // RIFE "4.6"/"4.25"; TAESD "encoder"/"decoder"/"encoder+decoder"; embedding "pt"/"safetensors".
  std::string variant;
  // SD1.x checkpoints.
  int unet_in_channels = 0;       // 4, or 9 for inpainting
  bool old_clip_naming = false;   // cond_stage_model.transformer.{embeddings,encoder,...} without text_model.
  bool has_text_encoder = false;
  bool has_vae = false;
  int ema_tensors = 0;            // model_ema.*, ignored
  int ignored_tensors = 0;        // keys no component uses, ignored
  // Embeddings.
  int embedding_vectors = 0;
  int embedding_dim = 0;
};

// INVALID_ARGUMENT "unsupported architecture ..." for other SD generations; NOT_FOUND-free: an unrecognised file
// is INVALID_ARGUMENT naming its first tensors.
absl::StatusOr<Layout> DetectLayout(const TensorIndex& index, absl::string_view label);

// WebUI's renaming of the old CLIP key naming (transformers < 4) to the text_model.* naming; other keys unchanged.
std::string NormalizeSd1Key(const std::string& name);

}  // namespace atelier::engine
