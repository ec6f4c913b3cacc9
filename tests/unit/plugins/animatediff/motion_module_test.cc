// The AnimateDiff plugin's motion modules against the fixtures (ATELIER_FIXTURES): motion-module-tiny's single modules
// and the whole base UNet (plugin-base-unet) with the modules at the engine's 21 block points, as v2 (with the
// middle module), v3 (without) and v1 (without, the UNet's GroupNorms over each video's frames), for one video and
// for the cond + uncond pair; the released manifests load as v1 / v2 / v3; bad files are refused by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include <ATen/ATen.h>

#include "engine/models/unet.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "motion_module.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using animatediff::MotionModuleSet;
using animatediff::MotionModuleVersion;
using ::testing::HasSubstr;

std::unique_ptr<engine::UNet> BaseUNet(const testing::FixtureCase& c) {
  const fs::path base_dir = c.dir / ".." / "plugin-base-unet";
  for (const auto& b : testing::LoadCases("plugin-base-unet")) {
    if (fs::equivalent(b.dir, base_dir)) {
      auto unet = engine::UNet::Create(testing::UNetConfigOf(b.json["config"]),
                                       testing::ReadWeights(b, "model.diffusion_model."));
      EXPECT_TRUE(unet.ok()) << unet.status();
      return unet.ok() ? std::move(*unet) : nullptr;
    }
  }
  ADD_FAILURE() << "no plugin-base-unet case at " << base_dir;
  return nullptr;
}

std::map<std::string, at::Tensor> WithoutMiddle(std::map<std::string, at::Tensor> w) {
  for (auto it = w.begin(); it != w.end();) it = it->first.rfind("mid_block.", 0) == 0 ? w.erase(it) : std::next(it);
  return w;
}

TEST(MotionModuleTest, SingleModulesMatchTheGolden) {
  for (const auto& c : testing::CasesOf("motion-module-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto set = MotionModuleSet::FromTensors(testing::ReadWeights(c, ""), "weights.safetensors", at::kCPU, at::kFloat);
    ASSERT_TRUE(set.ok()) << set.status();
    EXPECT_EQ((*set)->version(), MotionModuleVersion::kV2);
    const int64_t frames = c.json["config"]["video_length"].get<int64_t>();
    auto down = (*set)->Forward(0, c.io.at("single_down_blocks_in"), frames);
    ASSERT_TRUE(down.ok()) << down.status();
    EXPECT_TRUE(testing::AllClose(*down, c.io.at("single_down_blocks_out"), c.atol, c.rtol, "down_blocks.0.0"));
    auto mid = (*set)->Forward(8, c.io.at("single_mid_block_in"), frames);
    ASSERT_TRUE(mid.ok()) << mid.status();
    EXPECT_TRUE(testing::AllClose(*mid, c.io.at("single_mid_block_out"), c.atol, c.rtol, "mid_block"));
    // Rows that are not whole videos, or more frames than the encoding covers, are refused.
    EXPECT_FALSE((*set)->Forward(0, c.io.at("single_down_blocks_in"), 7).ok());
    EXPECT_FALSE((*set)->Forward(0, c.io.at("single_down_blocks_in").repeat({3, 1, 1, 1}), 48).ok());
  }
}

// A module for a UNet of another shape (2 levels of 1 ResBlock, as the shipped tiny module for the embedded model):
// its shape is read from the names, its points numbered as the UNet numbers them, each computing what the same
// weights compute in the released layout.
TEST(MotionModuleTest, AModuleForAnotherUNetShapeMapsItsPointsByName) {
  for (const auto& c : testing::CasesOf("motion-module-tiny")) {
    SCOPED_TRACE(c.dir.string());
    const auto full = testing::ReadWeights(c, "");
    auto released = MotionModuleSet::FromTensors(full, "released", at::kCPU, at::kFloat);
    ASSERT_TRUE(released.ok()) << released.status();
    EXPECT_EQ((*released)->levels(), 4);
    EXPECT_EQ((*released)->per_level(), 2);
    // down_blocks.L.motion_modules.0 (L < 2), the middle, up_blocks.L.motion_modules.0..1 (L < 2).
    std::map<std::string, at::Tensor> small;
    for (const auto& [k, v] : full) {
      int level = -1, index = -1;
      if (std::sscanf(k.c_str(), "down_blocks.%d.motion_modules.%d.", &level, &index) == 2 && level < 2 && index < 1) {
        small[k] = v;
      } else if (std::sscanf(k.c_str(), "up_blocks.%d.motion_modules.%d.", &level, &index) == 2 && level < 2 &&
                 index < 2) {
        small[k] = v;
      } else if (k.rfind("mid_block.", 0) == 0) {
        small[k] = v;
      }
    }
    auto set = MotionModuleSet::FromTensors(small, "small", at::kCPU, at::kFloat);
    ASSERT_TRUE(set.ok()) << set.status();
    EXPECT_EQ((*set)->version(), MotionModuleVersion::kV2);
    EXPECT_EQ((*set)->levels(), 2);
    EXPECT_EQ((*set)->per_level(), 1);
    EXPECT_EQ(animatediff::PointCount(2, 1), 7);
    for (int p = 0; p < 7; ++p) EXPECT_TRUE((*set)->HasPoint(p)) << p;
    EXPECT_FALSE((*set)->HasPoint(7));
    EXPECT_EQ((*set)->ModuleName(1), "down_blocks.1.motion_modules.0");
    EXPECT_EQ((*set)->ModuleName(2), "mid_block.motion_modules.0");
    EXPECT_EQ((*set)->ModuleName(4), "up_blocks.0.motion_modules.1");
    EXPECT_EQ((*set)->ModuleName(6), "up_blocks.1.motion_modules.1");
    EXPECT_THAT((*set)->Description(), HasSubstr("7 modules"));
    // Point 4 of the small set is point 10 (up_blocks.0.motion_modules.1) of the released one.
    const int64_t frames = c.json["config"]["video_length"].get<int64_t>();
    const at::Tensor hidden = c.io.at("single_down_blocks_in");
    auto a = (*set)->Forward(4, hidden, frames);
    auto b = (*released)->Forward(10, hidden, frames);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(at::equal(*a, *b));
    EXPECT_FALSE(at::equal(*a, hidden));
    // Its LoRA layer names are the file's.
    EXPECT_EQ((*set)->LayerNames().count(
                  "up_blocks_1_motion_modules_1_temporal_transformer_transformer_blocks_0_attention_blocks_0_to_q"),
              1u);
  }
}

TEST(MotionModuleTest, WholeUNetV2V3AndV1MatchTheGolden) {
  for (const auto& c : testing::CasesOf("motion-module-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto unet = BaseUNet(c);
    ASSERT_NE(unet, nullptr);
    const int64_t frames = c.json["config"]["video_length"].get<int64_t>();
    auto v2 = MotionModuleSet::FromTensors(testing::ReadWeights(c, ""), "v2", at::kCPU, at::kFloat);
    auto v3 = MotionModuleSet::FromTensors(WithoutMiddle(testing::ReadWeights(c, "")), "v3", at::kCPU, at::kFloat);
    ASSERT_TRUE(v2.ok() && v3.ok());
    EXPECT_EQ((*v3)->version(), MotionModuleVersion::kV3);
    EXPECT_FALSE((*v3)->HasPoint(8));
    const auto run = [&](const MotionModuleSet& set, const char* x, const char* t, const char* ctx, int gn_frames) {
      engine::UNetCallOptions options;
      options.block_hook = [&](const engine::UNetBlockPoint& where, at::Tensor& hidden) -> absl::Status {
        auto out = set.Forward(where.point, hidden, frames);
        if (!out.ok()) return out.status();
        hidden = *out;
        return absl::OkStatus();
      };
      options.frames_per_video = gn_frames;
      auto eps = unet->Forward(c.io.at(x), c.io.at(t), c.io.at(ctx), options);
      EXPECT_TRUE(eps.ok()) << eps.status();
      return eps.ok() ? *eps : at::Tensor();
    };
    EXPECT_TRUE(testing::AllClose(run(**v2, "x", "timesteps", "context", 0), c.io.at("eps_v2"), c.atol, c.rtol, "eps_v2"));
    EXPECT_TRUE(testing::AllClose(run(**v3, "x", "timesteps", "context", 0), c.io.at("eps_v3"), c.atol, c.rtol, "eps_v3"));
    EXPECT_TRUE(testing::AllClose(run(**v2, "x_cfg", "timesteps_cfg", "context_cfg", 0), c.io.at("eps_v2_cfg"), c.atol,
                                  c.rtol, "eps_v2_cfg"));
    // v1: no middle module, 24 positions of the float32 sinusoid (a v1 file's pe; the case's module is built with
    // v1's max_len and its stored 32-position F16 encodings are not used), and every ResBlock / output GroupNorm over
    // each video's frames.
    auto v1_weights = WithoutMiddle(testing::ReadWeights(c, ""));
    for (auto& [k, v] : v1_weights) {
      if (k.find("pos_encoder.pe") != std::string::npos) v = animatediff::PositionEncoding(24, v.size(2));
    }
    auto v1 = MotionModuleSet::FromTensors(v1_weights, "v1", at::kCPU, at::kFloat, MotionModuleVersion::kV1);
    ASSERT_TRUE(v1.ok()) << v1.status();
    EXPECT_TRUE((*v1)->group_norm_over_frames());
    EXPECT_EQ((*v1)->max_frames(), 24);
    EXPECT_TRUE(testing::AllClose(run(**v1, "x_cfg", "timesteps_cfg", "context_cfg", static_cast<int>(frames)),
                                  c.io.at("eps_v1_cfg"), c.atol, c.rtol, "eps_v1_cfg"));
    auto plain = unet->Forward(c.io.at("x"), c.io.at("timesteps"), c.io.at("context"));
    ASSERT_TRUE(plain.ok());
    EXPECT_TRUE(testing::AllClose(*plain, c.io.at("eps_no_motion"), c.atol, c.rtol, "eps_no_motion"));
  }
}

TEST(MotionModuleTest, ReleasedManifestsLoadAsTheirVersion) {
  for (const auto& [file, version, modules, frames] :
       std::vector<std::tuple<std::string, MotionModuleVersion, int, int>>{
           {"animatediff-mm-sd15-v1.json", MotionModuleVersion::kV1, 20, 24},
           {"animatediff-mm-sd15-v2.json", MotionModuleVersion::kV2, 21, 32},
           {"animatediff-mm-sd15-v3.json", MotionModuleVersion::kV3, 20, 32}}) {
    std::map<std::string, at::Tensor> meta;
    for (const auto& [name, shape] : testing::ManifestShapes(file, "")) {
      meta[name] = at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
    }
    auto set = MotionModuleSet::FromTensors(meta, file, at::kMeta, at::kFloat);
    ASSERT_TRUE(set.ok()) << file << ": " << set.status();
    EXPECT_EQ((*set)->version(), version) << file;
    EXPECT_EQ((*set)->max_frames(), frames) << file;
    EXPECT_THAT((*set)->Description(), HasSubstr(absl::StrCat(modules, " modules")));
    EXPECT_EQ((*set)->group_norm_over_frames(), version == MotionModuleVersion::kV1);
  }
}

TEST(MotionModuleTest, BadFilesAreRefusedByName) {
  for (const auto& c : testing::CasesOf("motion-module-tiny")) {
    auto weights = testing::ReadWeights(c, "");
    auto cut = weights;
    cut.erase("up_blocks.2.motion_modules.1.temporal_transformer.proj_out.bias");
    auto missing = MotionModuleSet::FromTensors(cut, "cut.safetensors", at::kCPU, at::kFloat);
    EXPECT_THAT(std::string(missing.status().message()), HasSubstr("up_blocks.2.motion_modules.1.temporal_transformer.proj_out.bias"));
    auto shaped = weights;
    shaped["down_blocks.1.motion_modules.0.temporal_transformer.proj_in.weight"] = at::zeros({32, 16});
    EXPECT_THAT(std::string(MotionModuleSet::FromTensors(shaped, "s", at::kCPU, at::kFloat).status().message()),
                HasSubstr("proj_in.weight is [32, 16]"));
    auto extra = weights;
    extra["down_blocks.0.motion_modules.0.temporal_transformer.extra"] = at::zeros({1});
    EXPECT_FALSE(MotionModuleSet::FromTensors(extra, "x", at::kCPU, at::kFloat).ok());
    // An SDXL module (no down_blocks.3): refused naming the kind.
    std::map<std::string, at::Tensor> xl;
    for (const auto& [k, v] : weights) {
      if (k.find("down_blocks.3") == std::string::npos && k.find("mid_block") == std::string::npos) xl[k] = v;
    }
    auto sdxl = MotionModuleSet::FromTensors(xl, "hsxl.safetensors", at::kCPU, at::kFloat);
    EXPECT_THAT(std::string(sdxl.status().message()), HasSubstr("SDXL"));
    // The wrappers of .ckpt files are removed.
    std::map<std::string, at::Tensor> wrapped;
    for (const auto& [k, v] : weights) wrapped["state_dict." + k] = v;
    EXPECT_TRUE(MotionModuleSet::FromTensors(wrapped, "w.ckpt", at::kCPU, at::kFloat).ok());
  }
}

}  // namespace
}  // namespace atelier

namespace atelier::animatediff {
namespace {

// The CPU attention kernel (fused q/k/v, no transposed copies) equals the plain ATen composition the other devices
// and dtypes run, for odd shapes too (frames 5, 3 positions, head width 12).
TEST(MotionModuleTest, CpuAttentionKernelEqualsTheAtenPath) {
  at::manual_seed(3);
  TemporalModule m;
  const int64_t c = 96;
  m.channels = c;
  const std::string b = "transformer_blocks.0.";
  const auto rnd = [](std::vector<int64_t> shape) { return at::randn(shape) * 0.2; };
  m.w["norm.weight"] = rnd({c}) + 1;
  m.w["norm.bias"] = rnd({c});
  m.w["proj_in.weight"] = rnd({c, c});
  m.w["proj_in.bias"] = rnd({c});
  for (int i = 0; i < 2; ++i) {
    const std::string a = b + "attention_blocks." + std::to_string(i) + ".";
    for (const char* p : {"to_q", "to_k", "to_v"}) m.w[a + p + ".weight"] = rnd({c, c});
    m.w[a + "to_out.0.weight"] = rnd({c, c});
    m.w[a + "to_out.0.bias"] = rnd({c});
    m.w[a + "pos_encoder.pe"] = PositionEncoding(8, c);
    m.w[b + "norms." + std::to_string(i) + ".weight"] = rnd({c}) + 1;
    m.w[b + "norms." + std::to_string(i) + ".bias"] = rnd({c});
  }
  m.w[b + "ff.net.0.proj.weight"] = rnd({8 * c, c});
  m.w[b + "ff.net.0.proj.bias"] = rnd({8 * c});
  m.w[b + "ff.net.2.weight"] = rnd({c, 4 * c});
  m.w[b + "ff.net.2.bias"] = rnd({c});
  m.w[b + "ff_norm.weight"] = rnd({c}) + 1;
  m.w[b + "ff_norm.bias"] = rnd({c});
  m.w["proj_out.weight"] = rnd({c, c});
  m.w["proj_out.bias"] = rnd({c});
  const at::Tensor hidden = at::randn({10, c, 3, 1});  // 2 videos of 5 frames
  const at::Tensor plain = TemporalForward(m, hidden, 5);
  FuseQkv(m);
  const at::Tensor fused = TemporalForward(m, hidden, 5);
  // float32 sums in another order: relative to the output's size.
  EXPECT_LE((plain - fused).abs().max().item<double>(), 2e-6 * plain.abs().max().item<double>());
  EXPECT_GT((plain - hidden).abs().max().item<double>(), 1e-2);  // the module does something
}

}  // namespace
}  // namespace atelier::animatediff
