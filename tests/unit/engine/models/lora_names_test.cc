// LoRA module names: every module kohya-ss sd-scripts' LoRA/LoCon network names for SD1.5 (built here from diffusers'
// UNet and CLIP structure) maps to exactly one distinct linear/conv module of the SD1.5 checkpoint layout in
// ../shared/manifests/sd15-ldm.json, as WebUI's Lora extension maps them; LDM-style names map too; other names do not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/models/lora_names.h"
#include "test_support.h"

namespace atelier {
namespace {

// kohya's targets: Transformer2DModel and CLIPAttention / CLIPMLP (LoRA), ResnetBlock2D / Downsample2D /
// Upsample2D (LoCon), as "lora_unet_" / "lora_te_" + the diffusers module path with "_".
std::vector<std::string> KohyaSd15Modules() {
  std::vector<std::string> out;
  auto transformer = [&](const std::string& p) {
    for (const char* m : {"proj_in", "proj_out"}) out.push_back(p + m);
    for (const char* a : {"attn1", "attn2"}) {
      for (const char* l : {"to_q", "to_k", "to_v", "to_out_0"}) out.push_back(absl::StrCat(p, "transformer_blocks_0_", a, "_", l));
    }
    out.push_back(p + "transformer_blocks_0_ff_net_0_proj");
    out.push_back(p + "transformer_blocks_0_ff_net_2");
  };
  auto resnet = [&](const std::string& p, bool shortcut) {
    for (const char* m : {"conv1", "conv2", "time_emb_proj"}) out.push_back(p + m);
    if (shortcut) out.push_back(p + "conv_shortcut");
  };
  const int channels[] = {320, 640, 1280, 1280};
  for (int b = 0; b < 4; ++b) {
    for (int j = 0; j < 2; ++j) {
      if (b < 3) transformer(absl::StrCat("lora_unet_down_blocks_", b, "_attentions_", j, "_"));
      resnet(absl::StrCat("lora_unet_down_blocks_", b, "_resnets_", j, "_"), j == 0 && b > 0 && channels[b] != channels[b - 1]);
    }
    if (b < 3) out.push_back(absl::StrCat("lora_unet_down_blocks_", b, "_downsamplers_0_conv"));
  }
  transformer("lora_unet_mid_block_attentions_0_");
  resnet("lora_unet_mid_block_resnets_0_", false);
  resnet("lora_unet_mid_block_resnets_1_", false);
  for (int b = 0; b < 4; ++b) {
    for (int j = 0; j < 3; ++j) {
      if (b > 0) transformer(absl::StrCat("lora_unet_up_blocks_", b, "_attentions_", j, "_"));
      resnet(absl::StrCat("lora_unet_up_blocks_", b, "_resnets_", j, "_"), true);  // concatenated skips
    }
    if (b < 3) out.push_back(absl::StrCat("lora_unet_up_blocks_", b, "_upsamplers_0_conv"));
  }
  for (int l = 0; l < 12; ++l) {
    for (const char* m : {"self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2"}) {
      out.push_back(absl::StrCat("lora_te_text_model_encoder_layers_", l, "_", m));
    }
  }
  return out;
}

TEST(LoraNamesTest, EveryKohyaSd15ModuleMapsToExactlyOneCheckpointModule) {
  const auto manifest = nlohmann::json::parse(std::ifstream(testing::FixturesDir().parent_path() / "manifests" / "sd15-ldm.json"));
  std::vector<std::pair<std::string, size_t>> unet, text;
  for (const auto& [name, shape] : manifest["tensors"].items()) {
    if (absl::StartsWith(name, "model.diffusion_model.")) unet.emplace_back(name.substr(22), shape.size());
    if (absl::StartsWith(name, "cond_stage_model.transformer.")) text.emplace_back(name.substr(29), shape.size());
  }
  const auto map = engine::LoraNameMap::Build(unet, text);
  std::set<std::string> targets;
  const auto modules = KohyaSd15Modules();
  for (const auto& m : modules) {
    auto t = map.Find(m);
    ASSERT_TRUE(t.has_value()) << m << " -> " << engine::KohyaToCompvis(m);
    const std::string full = (t->part == engine::LoraTarget::Part::kUnet ? "model.diffusion_model." : "cond_stage_model.transformer.") + t->module + ".weight";
    EXPECT_TRUE(manifest["tensors"].contains(full)) << full;
    EXPECT_TRUE(targets.insert(full).second) << m << " maps to " << full << " a second time";
  }
  EXPECT_EQ(targets.size(), modules.size());
  // Spot checks of WebUI's arithmetic.
  EXPECT_EQ(map.Find("lora_unet_down_blocks_1_attentions_1_proj_in")->module, "input_blocks.5.1.proj_in");
  EXPECT_EQ(map.Find("lora_unet_up_blocks_0_upsamplers_0_conv")->module, "output_blocks.2.1.conv");
  EXPECT_EQ(map.Find("lora_unet_up_blocks_1_upsamplers_0_conv")->module, "output_blocks.5.2.conv");
  EXPECT_EQ(map.Find("lora_unet_mid_block_resnets_1_conv2")->module, "middle_block.2.out_layers.3");
  EXPECT_EQ(map.Find("lora_te_text_model_encoder_layers_11_mlp_fc2")->module, "text_model.encoder.layers.11.mlp.fc2");
  // LDM-style names, and names that are no module.
  EXPECT_EQ(map.Find("lora_unet_input_blocks_1_1_proj_in")->module, "input_blocks.1.1.proj_in");
  EXPECT_FALSE(map.Find("lora_unet_down_blocks_9_attentions_0_proj_in").has_value());
  EXPECT_FALSE(map.Find("lora_te2_text_model_encoder_layers_0_mlp_fc1").has_value());  // SDXL's second encoder
}

}  // namespace
}  // namespace atelier
