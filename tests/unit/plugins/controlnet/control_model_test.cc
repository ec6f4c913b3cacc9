// The ControlNet plugin's model code against the fixtures (ATELIER_FIXTURES): plugin-base-unet (the base UNet every
// plugin case builds on), controlnet-tiny (the 13 raw residuals and eps in the three control modes, with and
// without a weight, and the guidance-window examples), and every released layout of the SD1.5 manifest.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "control_model.h"
#include "control_weights.h"
#include "engine/models/unet.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using controlnet::ControlMode;
using ::testing::HasSubstr;

std::string Index2(int i) { return (i < 10 ? "0" : "") + std::to_string(i); }

// The base UNet a plugin case names ("../plugin-base-unet" beside it).
std::unique_ptr<engine::UNet> BaseUNet(const testing::FixtureCase& c) {
  const fs::path base_dir = c.dir / ".." / "plugin-base-unet";
  auto cases = testing::LoadCases("plugin-base-unet");
  for (const auto& b : cases) {
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

std::unique_ptr<controlnet::ControlNetModel> Net(const testing::FixtureCase& c) {
  engine::WeightMap raw = testing::ReadWeights(c, "");
  auto normalized = controlnet::NormalizeControlNetKeys(std::move(raw), "weights.safetensors");
  EXPECT_TRUE(normalized.ok()) << normalized.status();
  if (!normalized.ok()) return nullptr;
  auto net = controlnet::ControlNetModel::Create(*normalized, "weights.safetensors", at::kCPU, at::kFloat);
  EXPECT_TRUE(net.ok()) << net.status();
  return net.ok() ? std::move(*net) : nullptr;
}

TEST(PluginBaseUNetTest, EpsMatchesTheGolden) {
  for (const auto& c : testing::CasesOf("plugin-base-unet")) {
    SCOPED_TRACE(c.dir.string());
    auto unet = engine::UNet::Create(testing::UNetConfigOf(c.json["config"]), testing::ReadWeights(c, "model.diffusion_model."));
    ASSERT_TRUE(unet.ok()) << unet.status();
    auto eps = (*unet)->Forward(c.io.at("x"), c.io.at("timesteps"), c.io.at("context"));
    ASSERT_TRUE(eps.ok()) << eps.status();
    EXPECT_TRUE(testing::AllClose(*eps, c.io.at("eps"), c.atol, c.rtol, "eps"));
  }
}

TEST(ControlNetModelTest, ConfigIsReadFromTheTensorShapes) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto normalized = controlnet::NormalizeControlNetKeys(testing::ReadWeights(c, ""), "w");
    ASSERT_TRUE(normalized.ok()) << normalized.status();
    auto config = controlnet::InferControlNetConfig(*normalized, "w");
    ASSERT_TRUE(config.ok()) << config.status();
    const auto& j = c.json["config"]["controlnet"];
    EXPECT_EQ(config->unet.model_channels, j["model_channels"].get<int>());
    EXPECT_EQ(config->unet.channel_mult, j["channel_mult"].get<std::vector<int>>());
    EXPECT_EQ(config->unet.num_res_blocks, j["num_res_blocks"].get<int>());
    EXPECT_EQ(config->unet.context_dim, j["context_dim"].get<int>());
    EXPECT_EQ(config->hint_channels, j["hint_channels"].get<int>());
    auto want_attn = j["attention_resolutions"].get<std::vector<int>>();
    auto got_attn = config->unet.attention_resolutions;
    std::sort(want_attn.begin(), want_attn.end());
    std::sort(got_attn.begin(), got_attn.end());
    EXPECT_EQ(got_attn, want_attn);
  }
}

// The 13 raw residuals, then eps with the residuals injected in every control mode the case records (its
// values.units: mode and weight per output), through the engine's UNet residual path.
TEST(ControlNetModelTest, ResidualsAndControlModesMatchTheGoldens) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto net = Net(c);
    auto unet = BaseUNet(c);
    ASSERT_TRUE(net && unet);
    const auto& io = c.io;
    auto guided = net->EncodeHint(io.at("hint"));
    ASSERT_TRUE(guided.ok()) << guided.status();
    auto raw = net->Forward(io.at("x"), io.at("timesteps"), io.at("context"), *guided);
    ASSERT_TRUE(raw.ok()) << raw.status();
    for (int i = 0; i < controlnet::kResiduals; ++i) {
      EXPECT_TRUE(testing::AllClose((*raw)[i], io.at("control_" + Index2(i)), c.atol, c.rtol, "control_" + Index2(i)));
    }
    const int64_t rows = io.at("x").size(0);
    // cond_mark from the case: the leading rows marked 1 are the conditional ones.
    int64_t cond_rows = 0;
    for (const auto& m : c.json["values"]["batch_cond_mark"]) cond_rows += m.get<double>() > 0.5 ? 1 : 0;
    auto no_control = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"));
    ASSERT_TRUE(no_control.ok());
    EXPECT_TRUE(testing::AllClose(*no_control, io.at("eps_no_control"), c.atol, c.rtol, "eps_no_control"));
    int checked = 0;
    for (const auto& [output, unit] : c.json["values"]["units"].items()) {
      SCOPED_TRACE(output);
      const std::string mode = unit["control_mode"];
      const bool soft = mode != "Balanced";
      const bool cond_only = mode == "ControlNet is more important";
      controlnet::Residuals sum;
      controlnet::AccumulateResiduals(sum, *raw, controlnet::ControlScales(unit["weight"].get<double>(), soft, {}),
                                      cond_only, cond_rows, rows);
      engine::UNetCallOptions options;
      options.residuals = &sum;
      auto eps = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
      ASSERT_TRUE(eps.ok()) << eps.status();
      EXPECT_TRUE(testing::AllClose(*eps, io.at(output), c.atol, c.rtol, output));
      // The conditional rows alone through the net give the same answer ("ControlNet is more important" computes
      // only those).
      if (cond_only) {
        auto cond = net->Forward(io.at("x").narrow(0, 0, cond_rows), io.at("timesteps").narrow(0, 0, cond_rows),
                                 io.at("context").narrow(0, 0, cond_rows), *guided);
        ASSERT_TRUE(cond.ok());
        controlnet::Residuals sum2;
        controlnet::AccumulateResiduals(sum2, *cond, controlnet::ControlScales(unit["weight"].get<double>(), soft, {}),
                                        true, cond_rows, rows);
        for (int i = 0; i < controlnet::kResiduals; ++i) {
          EXPECT_TRUE(testing::AllClose(sum2[i], sum[i], 1e-5, 1e-5, "cond rows only"));
        }
      }
      ++checked;
    }
    EXPECT_GT(checked, 0);
    // Two units sum: the Balanced unit twice at half weight equals it once.
    controlnet::Residuals twice;
    for (int k = 0; k < 2; ++k) {
      controlnet::AccumulateResiduals(twice, *raw, controlnet::ControlScales(0.5, false, {}), false, cond_rows, rows);
    }
    controlnet::Residuals once;
    controlnet::AccumulateResiduals(once, *raw, controlnet::ControlScales(1.0, false, {}), false, cond_rows, rows);
    for (int i = 0; i < controlnet::kResiduals; ++i) EXPECT_TRUE(testing::AllClose(twice[i], once[i], 1e-6, 1e-6));
  }
}

TEST(ControlNetModelTest, SoftScalesAndGuidanceWindowFollowTheExtension) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    const auto& v = c.json["values"];
    if (v.contains("soft_scales_weight_1")) {
      const auto scales = controlnet::ControlScales(1.0, true, {});
      for (int i = 0; i < controlnet::kResiduals; ++i) {
        EXPECT_NEAR(scales[i], v["soft_scales_weight_1"][i].get<double>(), 1e-12) << i;
      }
    }
    int examples = 0;
    for (const auto& e : v["guidance_schedule_examples"]) {
      const int total = e["total_sampling_steps"];
      const double start = e["guidance_start"], end = e["guidance_end"];
      std::vector<int> active_values, active_steps;
      for (int s = 0; s < total; ++s) {
        if (controlnet::GuidanceActive(s, total, start, end)) active_values.push_back(s);
        // Step k is evaluated with sampling_step max(k - 1, 0).
        if (controlnet::GuidanceActive(std::max(s - 1, 0), total, start, end)) active_steps.push_back(s);
      }
      EXPECT_EQ(active_values, e["active_sampling_step_values"].get<std::vector<int>>()) << e.dump();
      EXPECT_EQ(active_steps, e["active_step_indices_in_a1111"].get<std::vector<int>>()) << e.dump();
      ++examples;
    }
    EXPECT_GT(examples, 0);
    // advanced_weighting replaces the scales.
    std::vector<double> adv(controlnet::kResiduals, 0.25);
    EXPECT_EQ(controlnet::ControlScales(1.0, false, adv)[3], 0.25);
  }
}

fs::path ManifestsDir() { return testing::FixturesDir().parent_path() / "manifests"; }

// The architecture's key set for the SD1.5 config is exactly the manifest's 340 tensors, shapes included.
// A ControlNet for a UNet of another shape (the embedded model's 2 levels of 1 ResBlock, 4 input blocks): read from
// its shapes, one zero conv per input block, its residuals at the skips' indices and the middle's, which the UNet
// adds to its own skips; the residual slots of blocks it does not have stay empty.
TEST(ControlNetModelTest, ANetForAnotherUNetShapeGivesOneResidualPerInputBlock) {
  controlnet::ControlNetConfig config;
  config.unet.model_channels = 32;
  config.unet.channel_mult = {1, 2};
  config.unet.num_res_blocks = 1;
  config.unet.attention_resolutions = {1, 2};
  config.unet.context_dim = 32;
  config.unet.num_heads = 8;
  at::manual_seed(4);
  engine::WeightMap weights;
  for (const auto& [name, shape] : controlnet::ControlNetParameterShapes(config)) {
    weights["control_model." + name] = at::randn(shape) * 0.05;
  }
  EXPECT_EQ(weights.count("control_model.zero_convs.3.0.weight"), 1u);
  EXPECT_EQ(weights.count("control_model.zero_convs.4.0.weight"), 0u);
  auto normalized = controlnet::NormalizeControlNetKeys(weights, "small");
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  auto inferred = controlnet::InferControlNetConfig(*normalized, "small");
  ASSERT_TRUE(inferred.ok()) << inferred.status();
  EXPECT_EQ(inferred->unet.channel_mult, config.unet.channel_mult);
  EXPECT_EQ(inferred->unet.num_res_blocks, 1);
  auto net = controlnet::ControlNetModel::Create(*normalized, "small", at::kCPU, at::kFloat);
  ASSERT_TRUE(net.ok()) << net.status();
  const at::Tensor x = at::randn({2, 4, 8, 8}), t = at::full({2}, 300.0), ctx = at::randn({2, 5, 32});
  auto hint = (*net)->EncodeHint(at::rand({1, 3, 64, 64}));
  ASSERT_TRUE(hint.ok()) << hint.status();
  auto residuals = (*net)->Forward(x, t, ctx, *hint);
  ASSERT_TRUE(residuals.ok()) << residuals.status();
  const std::vector<int64_t> channels = {32, 32, 32, 64};  // conv_in, level 0, downsampler, level 1
  const std::vector<int64_t> sides = {8, 8, 4, 4};
  for (int i = 0; i < controlnet::kResiduals; ++i) {
    SCOPED_TRACE(i);
    if (i < 4) {
      ASSERT_TRUE((*residuals)[i].defined());
      EXPECT_EQ((*residuals)[i].sizes(), at::IntArrayRef({2, channels[i], sides[i], sides[i]}));
    } else if (i + 1 < controlnet::kResiduals) {
      EXPECT_FALSE((*residuals)[i].defined());
    } else {
      ASSERT_TRUE((*residuals)[i].defined());
      EXPECT_EQ((*residuals)[i].sizes(), at::IntArrayRef({2, 64, 4, 4}));
    }
  }
  // The embedded-shaped UNet takes them: skips by index, the middle last.
  engine::UNetConfig unet_config = config.unet;
  unet_config.num_heads = 4;
  engine::WeightMap unet_weights;
  for (const auto& [name, shape] : engine::UNet::ParameterShapes(unet_config)) unet_weights[name] = at::randn(shape) * 0.05;
  auto unet = engine::UNet::Create(unet_config, unet_weights);
  ASSERT_TRUE(unet.ok()) << unet.status();
  engine::UNetCallOptions options;
  options.residuals = &*residuals;
  auto with = (*unet)->Forward(x, t, ctx, options);
  auto without = (*unet)->Forward(x, t, ctx);
  ASSERT_TRUE(with.ok() && without.ok()) << with.status();
  EXPECT_FALSE(at::allclose(*with, *without));
}

TEST(ControlNetModelTest, Sd15KeySetIsExactlyTheManifest) {
  const auto manifest = nlohmann::json::parse(std::ifstream(ManifestsDir() / "controlnet-v11-sd15.json"));
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& [name, shape] : manifest["tensors"].items()) {
    want[name.substr(std::string("control_model.").size())] = shape.get<std::vector<int64_t>>();
  }
  controlnet::ControlNetConfig config;  // UNetConfig defaults are SD1.5's
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& [name, shape] : controlnet::ControlNetParameterShapes(config)) got[name] = shape;
  EXPECT_EQ(got.size(), want.size());
  EXPECT_EQ(got, want);
  // Config inference from the manifest's shapes gives SD1.5's config back.
  engine::WeightMap meta;
  for (const auto& [name, shape] : want) meta[name] = at::empty(shape, at::TensorOptions().device(at::kMeta));
  auto inferred = controlnet::InferControlNetConfig(meta, "manifest");
  ASSERT_TRUE(inferred.ok()) << inferred.status();
  EXPECT_EQ(inferred->unet.model_channels, 320);
  EXPECT_EQ(inferred->unet.channel_mult, (std::vector<int>{1, 2, 4, 4}));
  EXPECT_EQ(inferred->unet.context_dim, 768);
}

// Every entry of the manifest's diffusers -> ldm table is what DiffusersToLdm gives.
TEST(ControlNetModelTest, DiffusersNamesMapAsTheManifestTable) {
  const auto manifest = nlohmann::json::parse(std::ifstream(ManifestsDir() / "controlnet-v11-sd15.json"));
  int n = 0;
  for (const auto& [diffusers, ldm] : manifest["diffusers_layout"].items()) {
    EXPECT_EQ(controlnet::DiffusersToLdm(diffusers, 2), ldm.get<std::string>()) << diffusers;
    ++n;
  }
  EXPECT_EQ(n, manifest["num_tensors"].get<int>());
  EXPECT_EQ(controlnet::DiffusersToLdm("unet.something.weight", 2), "");
}

// The same weights in each released layout give the same residuals: stripped prefix, a v1.0 full checkpoint (SD
// keys ignored), an fp16 repack, diffusers names with linear proj weights.
TEST(ControlNetModelTest, EveryLayoutLoadsToTheSameNet) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    const engine::WeightMap prefixed = testing::ReadWeights(c, "");
    auto reference = Net(c);
    ASSERT_TRUE(reference);
    const auto& io = c.io;
    auto guided = reference->EncodeHint(io.at("hint"));
    ASSERT_TRUE(guided.ok());
    auto want = reference->Forward(io.at("x"), io.at("timesteps"), io.at("context"), *guided);
    ASSERT_TRUE(want.ok());

    std::map<std::string, engine::WeightMap> layouts;
    engine::WeightMap stripped, full, fp16, diffusers;
    // Inverse of the diffusers table, built from the manifest's.
    const auto manifest = nlohmann::json::parse(std::ifstream(ManifestsDir() / "controlnet-v11-sd15.json"));
    std::map<std::string, std::string> to_diffusers;
    for (const auto& [d, l] : manifest["diffusers_layout"].items()) to_diffusers[l.get<std::string>()] = d;
    for (const auto& [name, t] : prefixed) {
      const std::string bare = name.substr(std::string("control_model.").size());
      stripped[bare] = t;
      full[name] = t;
      fp16[name] = t.to(at::kHalf);
      // The tiny net has fewer blocks than SD1.5: map through the rule for names the table lacks.
      auto it = to_diffusers.find(bare);
      if (it != to_diffusers.end()) {
        at::Tensor v = t;
        if (v.dim() == 4 && v.size(2) == 1 && (bare.find("proj_in") != std::string::npos ||
                                              bare.find("proj_out") != std::string::npos)) {
          v = v.reshape({v.size(0), v.size(1)});  // diffusers SD1.5 nets may store linear projections
        }
        diffusers[it->second] = v;
      }
    }
    full["model.diffusion_model.input_blocks.0.0.weight"] = at::zeros({1});
    full["first_stage_model.decoder.conv_in.weight"] = at::zeros({1});
    layouts["stripped"] = stripped;
    layouts["v1.0 full"] = full;
    layouts["fp16"] = fp16;
    if (diffusers.size() == prefixed.size()) layouts["diffusers"] = diffusers;
    EXPECT_EQ(layouts.size(), 4u) << "the diffusers table did not cover every tiny tensor";
    for (auto& [layout, w] : layouts) {
      SCOPED_TRACE(layout);
      auto n = controlnet::NormalizeControlNetKeys(w, layout);
      ASSERT_TRUE(n.ok()) << n.status();
      auto net = controlnet::ControlNetModel::Create(*n, layout, at::kCPU, at::kFloat);
      ASSERT_TRUE(net.ok()) << net.status();
      auto g = (*net)->EncodeHint(io.at("hint"));
      ASSERT_TRUE(g.ok());
      auto got = (*net)->Forward(io.at("x"), io.at("timesteps"), io.at("context"), *g);
      ASSERT_TRUE(got.ok());
      // F16 fixture weights survive the fp16 repack exactly: every layout gives the same numbers.
      for (int i = 0; i < controlnet::kResiduals; ++i) {
        EXPECT_TRUE(testing::AllClose((*got)[i], (*want)[i], 1e-6, 1e-6, layout));
      }
    }
  }
}

// Wrong files are refused naming what is wrong.
TEST(ControlNetModelTest, WrongFilesAreRefusedNamingTheProblem) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    engine::WeightMap w = testing::ReadWeights(c, "");
    auto missing = w;
    missing.erase("control_model.zero_convs.3.0.weight");
    auto n = controlnet::NormalizeControlNetKeys(missing, "cn.safetensors");
    ASSERT_TRUE(n.ok());
    auto net = controlnet::ControlNetModel::Create(*n, "cn.safetensors", at::kCPU, at::kFloat);
    ASSERT_FALSE(net.ok());
    EXPECT_THAT(std::string(net.status().message()), HasSubstr("control_model.zero_convs.3.0.weight"));

    auto misshaped = w;
    misshaped["control_model.middle_block_out.0.weight"] = at::zeros({3, 3, 1, 1});
    n = controlnet::NormalizeControlNetKeys(misshaped, "cn.safetensors");
    ASSERT_TRUE(n.ok());
    net = controlnet::ControlNetModel::Create(*n, "cn.safetensors", at::kCPU, at::kFloat);
    ASSERT_FALSE(net.ok());
    EXPECT_THAT(std::string(net.status().message()), HasSubstr("middle_block_out.0.weight is [3, 3, 1, 1]"));

    engine::WeightMap not_cn{{"model.diffusion_model.input_blocks.0.0.weight", at::zeros({1})}};
    auto bad = controlnet::NormalizeControlNetKeys(not_cn, "sd.safetensors");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("is not a ControlNet"));

    auto sdxl = w;
    sdxl["control_model.label_emb.0.0.bias"] = at::zeros({1});
    bad = controlnet::NormalizeControlNetKeys(sdxl, "xl.safetensors");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("SDXL"));

    engine::WeightMap sparse{{"controlnet_cond_embedding.conv_in.weight", at::zeros({1})},
                             {"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight", at::zeros({1})}};
    bad = controlnet::NormalizeControlNetKeys(sparse, "v3_sd15_sparsectrl_rgb.ckpt");
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("SparseCtrl"));

    auto sd2 = *controlnet::NormalizeControlNetKeys(w, "x");
    for (auto& [name, t] : sd2) {
      if (name.find("attn2.to_k.weight") != std::string::npos) t = at::zeros({t.size(0), 1024});
    }
    auto cfg = controlnet::InferControlNetConfig(sd2, "sd2.safetensors");
    ASSERT_FALSE(cfg.ok());
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr("SD2.x"));
  }
}

}  // namespace
}  // namespace atelier
