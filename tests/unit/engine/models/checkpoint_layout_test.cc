// Identification of model files from their tensor names: every released layout in ../shared/manifests (built as
// in-memory indexes, no multi-GB files), every fixture weights file, and the unsupported generations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/models/checkpoint_layout.h"
#include "engine/io/tensor_file.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using engine::Layout;
using engine::ModelType;
using engine::TensorIndex;
using ::testing::HasSubstr;

fs::path ManifestsDir() { return testing::FixturesDir().parent_path() / "manifests"; }

TensorIndex FromManifest(const fs::path& path) {
  const auto json = nlohmann::json::parse(std::ifstream(path));
  TensorIndex index;
  index.format = "manifest";
  for (const auto& [name, shape] : json["tensors"].items()) {
    index.tensors.push_back({name, engine::DType::kF32, shape.get<std::vector<std::int64_t>>()});
  }
  index.Build();
  return index;
}

struct ManifestExpectation {
  const char* file;
  ModelType type;
  const char* architecture;
  const char* variant;
};

TEST(CheckpointLayoutTest, EveryReleasedManifestIsIdentified) {
  const ManifestExpectation expectations[] = {
      {"sd15-ldm.json", ModelType::kSd1Checkpoint, "SD1.x", ""},
      {"sd-vae-ft-mse.json", ModelType::kVae, "VAE (SD1.x)", ""},
      {"controlnet-v11-sd15.json", ModelType::kControlNet, "ControlNet (SD1.x)", "control_model."},
      {"animatediff-mm-sd15-v1.json", ModelType::kMotionModule, "AnimateDiff motion module v1 (SD1.x)", "v1"},
      {"animatediff-mm-sd15-v2.json", ModelType::kMotionModule, "AnimateDiff motion module v2 (SD1.x)", "v2"},
      {"animatediff-mm-sd15-v3.json", ModelType::kMotionModule, "AnimateDiff motion module v3 (SD1.x)", "v3"},
      {"rife-v4.6.json", ModelType::kRife, "RIFE 4.6", "4.6"},
      {"rife-v4.25.json", ModelType::kRife, "RIFE 4.25", "4.25"},
  };
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(ManifestsDir())) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const auto* expected = std::find_if(std::begin(expectations), std::end(expectations),
                                        [&](const auto& e) { return entry.path().filename() == e.file; });
    ASSERT_NE(expected, std::end(expectations)) << "a new manifest needs an expectation here";
    auto layout = engine::DetectLayout(FromManifest(entry.path()), entry.path().filename().string());
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->type, expected->type);
    EXPECT_EQ(layout->architecture, expected->architecture);
    EXPECT_EQ(layout->variant, expected->variant);
    ++seen;
  }
  EXPECT_EQ(seen, 8);
}

TEST(CheckpointLayoutTest, Sd15DetailsAndVariants) {
  TensorIndex sd15 = FromManifest(ManifestsDir() / "sd15-ldm.json");
  auto layout = engine::DetectLayout(sd15, "sd15");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->unet_in_channels, 4);
  EXPECT_TRUE(layout->has_text_encoder);
  EXPECT_TRUE(layout->has_vae);
  EXPECT_FALSE(layout->old_clip_naming);
  EXPECT_EQ(layout->ema_tensors, 0);
  EXPECT_EQ(layout->ignored_tensors, 0);

  // Inpainting: 9 input channels.
  TensorIndex inpaint = sd15;
  for (auto& t : inpaint.tensors) {
    if (t.name == "model.diffusion_model.input_blocks.0.0.weight") t.shape = {320, 9, 3, 3};
  }
  inpaint.Build();
  layout = engine::DetectLayout(inpaint, "inpaint");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->architecture, "SD1.x inpainting");
  EXPECT_EQ(layout->unet_in_channels, 9);

  // Training checkpoint: EMA copies and extras are ignored, counted.
  TensorIndex training = sd15;
  training.tensors.push_back({"model_ema.decay", engine::DType::kF32, {}});
  training.tensors.push_back({"model_ema.diffusion_modelinput_blocks00weight", engine::DType::kF32, {320, 4, 3, 3}});
  training.tensors.push_back({"lvlb_weights_extra", engine::DType::kF32, {1000}});
  training.Build();
  layout = engine::DetectLayout(training, "training");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->ema_tensors, 2);
  EXPECT_EQ(layout->ignored_tensors, 1);

  // Old CLIP naming (no text_model.), renamed as WebUI does.
  TensorIndex old = sd15;
  for (auto& t : old.tensors) {
    const std::string p = "cond_stage_model.transformer.text_model.";
    if (t.name.rfind(p, 0) == 0) t.name = "cond_stage_model.transformer." + t.name.substr(p.size());
  }
  old.Build();
  layout = engine::DetectLayout(old, "old");
  ASSERT_TRUE(layout.ok());
  EXPECT_TRUE(layout->old_clip_naming);
  EXPECT_TRUE(layout->has_text_encoder);
  EXPECT_EQ(engine::NormalizeSd1Key("cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight"),
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight");
  EXPECT_EQ(engine::NormalizeSd1Key("model.diffusion_model.out.2.weight"), "model.diffusion_model.out.2.weight");
}

TEST(CheckpointLayoutTest, OtherGenerationsAreRefusedByName) {
  struct Case {
    std::vector<std::pair<std::string, std::vector<std::int64_t>>> tensors;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", {49408, 768}},
        {"model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3}}},
       "unsupported architecture: SDXL (found conditioner.embedders.0"},
      {{{"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", {3072, 1024}},
        {"model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3}}},
       "unsupported architecture: SD2.x"},
      {{{"model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3}},
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", {320, 1024}}},
       "unsupported architecture: SD2.x (found UNet cross-attention of width 1024"},
      {{{"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", {4608, 1536}}}, "unsupported architecture: SD3"},
      {{{"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}}, "unsupported architecture: Flux"},
      {{{"model.diffusion_model.input_blocks.0.0.weight", {320, 8, 3, 3}}}, "InstructPix2Pix"},
      {{{"encoder.down_blocks.0.resnets.0.conv1.weight", {128, 128, 3, 3}}}, "VAE in diffusers layout"},
      {{{"clip_l", {2, 768}}, {"clip_g", {2, 1280}}}, "an SDXL embedding"},
      {{{"some.random.weight", {3, 3}}}, "is not a model Atelier recognises (1 tensors, e.g. some.random.weight)"},
  };
  for (const Case& c : cases) {
    TensorIndex index;
    for (const auto& [name, shape] : c.tensors) index.tensors.push_back({name, engine::DType::kF16, shape});
    index.Build();
    const auto layout = engine::DetectLayout(index, "file.safetensors");
    ASSERT_FALSE(layout.ok()) << c.message;
    EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(layout.status().message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(layout.status().message()), HasSubstr("'file.safetensors'"));
  }
}

TEST(CheckpointLayoutTest, EmbeddingsAndStrippedControlNets) {
  TensorIndex pt;
  pt.tensors.push_back({"string_to_param.*", engine::DType::kF32, {2, 768}});
  pt.Build();
  auto layout = engine::DetectLayout(pt, "easynegative.pt");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->type, ModelType::kEmbedding);
  EXPECT_EQ(layout->embedding_vectors, 2);
  EXPECT_EQ(layout->embedding_dim, 768);
  EXPECT_EQ(layout->architecture, "textual inversion embedding (2 vectors)");

  TensorIndex st;
  st.tensors.push_back({"emb_params", engine::DType::kF32, {1, 768}});
  st.Build();
  layout = engine::DetectLayout(st, "x.safetensors");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->variant, "safetensors");

  // A ControlNet with the control_model. prefix stripped.
  TensorIndex cn = FromManifest(ManifestsDir() / "controlnet-v11-sd15.json");
  for (auto& t : cn.tensors) t.name = t.name.substr(std::string("control_model.").size());
  cn.Build();
  layout = engine::DetectLayout(cn, "control_canny-fp16.safetensors");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->type, ModelType::kControlNet);
  EXPECT_EQ(layout->variant, "stripped");

  // The same ControlNet in diffusers' layout (every name of the manifest's diffusers table, shapes of the ldm key).
  const auto manifest = nlohmann::json::parse(std::ifstream(ManifestsDir() / "controlnet-v11-sd15.json"));
  TensorIndex diffusers;
  for (const auto& [name, ldm] : manifest["diffusers_layout"].items()) {
    const auto shape = manifest["tensors"]["control_model." + ldm.get<std::string>()].get<std::vector<std::int64_t>>();
    diffusers.tensors.push_back({name, engine::DType::kF16, shape});
  }
  diffusers.Build();
  layout = engine::DetectLayout(diffusers, "diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->type, ModelType::kControlNet);
  EXPECT_EQ(layout->variant, "diffusers");
  EXPECT_EQ(layout->architecture, "ControlNet (SD1.x)");
}

// Every fixture file that holds a model is identified from its real file (names, dtypes and shapes as stored).
TEST(CheckpointLayoutTest, FixtureWeightFilesAreIdentified) {
  const std::map<std::string, std::string> expected = {
      {"tiny-sd", "SD1.x"},
      {"controlnet-tiny", "ControlNet (SD1.x)"},
      {"rife-v4", "RIFE 4.6"},
      {"rife-v4.25", "RIFE 4.25"},
      {"taesd", "TAESD decoder"},  // the public fixture holds the decoder only
  };
  int checked = 0;
  for (const auto& [dir, architecture] : expected) {
    const fs::path path = testing::FixturesDir() / dir / "weights.safetensors";
    if (!fs::exists(path)) continue;
    SCOPED_TRACE(dir);
    auto index = engine::ReadTensorIndex(path);
    ASSERT_TRUE(index.ok()) << index.status();
    auto layout = engine::DetectLayout(*index, dir);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->architecture, architecture);
    ++checked;
  }
  EXPECT_GE(checked, 4);
  // The motion-module fixture is a tiny SD1.5-layout module.
  auto mm = engine::ReadTensorIndex(testing::FixturesDir() / "motion-module-tiny" / "weights.safetensors");
  ASSERT_TRUE(mm.ok());
  auto layout = engine::DetectLayout(*mm, "mm");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->type, ModelType::kMotionModule);
}

}  // namespace
}  // namespace atelier
