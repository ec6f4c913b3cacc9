// The hyper-parameters of an SD1.x checkpoint, which the file itself does not store (the attention head count
// cannot be read from tensor shapes). Resolved as WebUI does: a same-name .yaml beside the checkpoint in the LDM
// config format wins; then values recorded in the safetensors __metadata__; otherwise SD1.x defaults. Whatever
// the source, the result is checked against the tensor shapes and a mismatch is an error naming the tensor.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_layout.h"
#include "engine/io/tensor_index.h"

namespace atelier::engine {

// ldm.modules.diffusionmodules.openaimodel.UNetModel (unet_config.params).
struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  int model_channels = 320;
  std::vector<int> attention_resolutions = {4, 2, 1};
  int num_res_blocks = 2;
  std::vector<int> channel_mult = {1, 2, 4, 4};
  int num_heads = 8;
  int num_head_channels = -1;
  int transformer_depth = 1;
  int context_dim = 768;
  bool use_linear_in_transformer = false;
};

// ldm.models.autoencoder.AutoencoderKL (first_stage_config.params and its ddconfig).
struct VaeConfig {
  int embed_dim = 4;
  bool double_z = true;
  int z_channels = 4;
  int resolution = 256;
  int in_channels = 3;
  int out_ch = 3;
  int ch = 128;
  std::vector<int> ch_mult = {1, 2, 4, 4};
  int num_res_blocks = 2;
  std::vector<int> attn_resolutions = {};
};

// The CLIP ViT-L/14 text tower (Hugging Face CLIPTextConfig names).
struct ClipTextConfig {
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  int vocab_size = 49408;
  int max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;
};

// DDPM.register_schedule (model.params).
struct ScheduleConfig {
  double linear_start = 0.00085;
  double linear_end = 0.012;
  int timesteps = 1000;
};

struct Sd1Config {
  UNetConfig unet;
  VaeConfig vae;
  ClipTextConfig clip;
  ScheduleConfig schedule;
  double scale_factor = 0.18215;
  // The size the model was trained for, when the file declares it (safetensors metadata "modelspec.resolution",
  // "WIDTHxHEIGHT", Stability's ModelSpec key); 0: not declared, and requests without a size get WebUI's 512.
  int native_width = 0, native_height = 0;
  // Where it came from: "yaml <file>", "__metadata__", "SD1.x defaults".
  std::string source = "SD1.x defaults";
};

// Reads an LDM-format yaml (WebUI's v1-inference.yaml shape) over `base`. cond_stage_config.params may carry
// CLIPTextConfig names (num_attention_heads, hidden_size, ...). INVALID_ARGUMENT naming the key on a bad value.
absl::StatusOr<Sd1Config> ParseLdmYaml(const std::string& text, const std::string& label, Sd1Config base);

// The configuration of the checkpoint at `path` (whose index and layout are given), resolved and checked.
absl::StatusOr<Sd1Config> ResolveSd1Config(const std::filesystem::path& path, const TensorIndex& index,
                                           const Layout& layout);

// Checks every shape the configuration implies against the tensors of a checkpoint (LDM names).
absl::Status CheckSd1Config(const Sd1Config& config, const TensorIndex& index, const std::string& label);

// The VAE part alone, for tensors named `prefix` + "encoder.conv_in.weight" ... (standalone VAE files).
absl::Status CheckVaeConfig(const VaeConfig& config, const TensorIndex& index, const std::string& prefix,
                            const std::string& label, const std::string& source);

}  // namespace atelier::engine
