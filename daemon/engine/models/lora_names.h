// Where a LoRA's modules go: kohya-ss sd-scripts name them after diffusers' UNet and the CLIP text model with "_"
// for "." ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "lora_te_text_model_encoder_
// layers_0_self_attn_q_proj"); WebUI's Lora extension (networks.py convert_diffusers_name_to_compvis) turns those into
// the checkpoint's LDM module names and looks them up among the model's modules with "_" for "." — done the same
// way here, over the loaded model's parameter names. Also the LDM-style names some trainers write
// ("lora_unet_input_blocks_1_1_proj_in").
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace atelier::engine {

struct LoraTarget {
  enum class Part { kUnet, kTextEncoder };
  Part part = Part::kUnet;
  std::string module;  // below model.diffusion_model. / the text encoder's text_model.* names, e.g.
                       // "input_blocks.1.1.transformer_blocks.0.attn1.to_q"; its weight is module + ".weight"
};

// kohya's diffusers-style UNet name (without the ".lora_up..." part) in WebUI's compvis form with "_" separators,
// e.g. "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q"; the name unchanged when no rule applies.
std::string KohyaToCompvis(const std::string& name);

class LoraNameMap {
 public:
  // From the parameter names of the UNet (below model.diffusion_model.) and the text encoder (text_model.*): every
  // module with a 2-D or 4-D ".weight" (linear and convolution layers).
  static LoraNameMap Build(const std::vector<std::pair<std::string, size_t>>& unet_weights,
                           const std::vector<std::pair<std::string, size_t>>& text_weights);

  // The module a LoRA key prefix names (the part before ".lora_up.weight", ".alpha", ...), or nothing.
  std::optional<LoraTarget> Find(const std::string& lora_module) const;

 private:
  std::map<std::string, LoraTarget> by_key_;  // "diffusion_model_input_blocks_1_1_proj_in" -> target
};

}  // namespace atelier::engine
