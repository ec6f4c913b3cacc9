#include "engine/models/lora_names.h"

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace atelier::engine {
namespace {

int Int(const std::string& s) {
  int v = 0;
  return absl::SimpleAtoi(s, &v) ? v : 0;
}

// diffusers' ResnetBlock2D parameter names in LDM's ResBlock.
std::string ResnetSuffix(const std::string& s) {
  static const std::pair<const char*, const char*> kMap[] = {
      {"conv1", "in_layers_2"},   {"conv2", "out_layers_3"},         {"norm1", "in_layers_0"},
      {"norm2", "out_layers_0"},  {"time_emb_proj", "emb_layers_1"}, {"conv_shortcut", "skip_connection"}};
  for (const auto& [from, to] : kMap) {
    if (s == from) return to;
  }
  return s;
}

}  // namespace

std::string KohyaToCompvis(const std::string& key) {
  static const std::regex conv_in(R"(lora_unet_conv_in(.*))"), conv_out(R"(lora_unet_conv_out(.*))"),
      time(R"(lora_unet_time_embedding_linear_(\d+)(.*))"),
      down(R"(lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+))"),
      mid(R"(lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+))"),
      up(R"(lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+))"),
      downsample(R"(lora_unet_down_blocks_(\d+)_downsamplers_0_conv)"),
      upsample(R"(lora_unet_up_blocks_(\d+)_upsamplers_0_conv)"),
      te(R"(lora_te_text_model_encoder_layers_(\d+)_(.+))");
  std::smatch m;
  if (std::regex_match(key, m, conv_in)) return absl::StrCat("diffusion_model_input_blocks_0_0", m[1].str());
  if (std::regex_match(key, m, conv_out)) return absl::StrCat("diffusion_model_out_2", m[1].str());
  if (std::regex_match(key, m, time)) return absl::StrCat("diffusion_model_time_embed_", Int(m[1]) * 2 - 2, m[2].str());
  if (std::regex_match(key, m, down)) {
    const bool attn = m[2] == "attentions";
    return absl::StrCat("diffusion_model_input_blocks_", 1 + Int(m[1]) * 3 + Int(m[3]), "_", attn ? 1 : 0, "_",
                        attn ? m[4].str() : ResnetSuffix(m[4].str()));
  }
  if (std::regex_match(key, m, mid)) {
    const bool attn = m[1] == "attentions";
    return absl::StrCat("diffusion_model_middle_block_", attn ? 1 : Int(m[2]) * 2, "_",
                        attn ? m[3].str() : ResnetSuffix(m[3].str()));
  }
  if (std::regex_match(key, m, up)) {
    const bool attn = m[2] == "attentions";
    return absl::StrCat("diffusion_model_output_blocks_", Int(m[1]) * 3 + Int(m[3]), "_", attn ? 1 : 0, "_",
                        attn ? m[4].str() : ResnetSuffix(m[4].str()));
  }
  if (std::regex_match(key, m, downsample)) return absl::StrCat("diffusion_model_input_blocks_", 3 + Int(m[1]) * 3, "_0_op");
  if (std::regex_match(key, m, upsample)) {
    return absl::StrCat("diffusion_model_output_blocks_", 2 + Int(m[1]) * 3, "_", Int(m[1]) > 0 ? 2 : 1, "_conv");
  }
  if (std::regex_match(key, m, te)) return absl::StrCat("transformer_text_model_encoder_layers_", m[1].str(), "_", m[2].str());
  return key;
}

LoraNameMap LoraNameMap::Build(const std::vector<std::pair<std::string, size_t>>& unet_weights,
                               const std::vector<std::pair<std::string, size_t>>& text_weights) {
  LoraNameMap map;
  auto add = [&](const std::vector<std::pair<std::string, size_t>>& names, const char* prefix, LoraTarget::Part part) {
    for (const auto& [name, dims] : names) {
      if (!absl::EndsWith(name, ".weight") || (dims != 2 && dims != 4)) continue;
      const std::string module = name.substr(0, name.size() - 7);
      map.by_key_[absl::StrCat(prefix, absl::StrReplaceAll(module, {{".", "_"}}))] = LoraTarget{part, module};
    }
  };
  add(unet_weights, "diffusion_model_", LoraTarget::Part::kUnet);
  add(text_weights, "transformer_", LoraTarget::Part::kTextEncoder);
  return map;
}

std::optional<LoraTarget> LoraNameMap::Find(const std::string& lora_module) const {
  auto it = by_key_.find(KohyaToCompvis(lora_module));
  if (it != by_key_.end()) return it->second;
  // LDM-style names: lora_unet_input_blocks_1_1_proj_in.
  if (absl::StartsWith(lora_module, "lora_unet_")) {
    it = by_key_.find("diffusion_model_" + lora_module.substr(10));
    if (it != by_key_.end()) return it->second;
  }
  return std::nullopt;
}

}  // namespace atelier::engine
