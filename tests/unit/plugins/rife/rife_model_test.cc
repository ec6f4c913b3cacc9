// RIFE against the fixtures (ATELIER_FIXTURES): rife-v4 (4.6: t = 0.5 and 0.25, scale 0.5, each block's flow and
// mask, the padding rule) and rife-v4.25 (t = 0.5 and 0.25, scale 2, the Head features), every output the case
// records read from its name; sequences (x2 of 4 frames: 7 frames, the odd ones the direct t = 0.5 calls), scene
// cuts, AnimateDiff's frame count, bad weights.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include "fixture_case.h"
#include "test_support.h"
#include "rife_model.h"
#include "rife_sequence.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<rife::RifeModel> Load(const testing::FixtureCase& c) {
  auto m = rife::RifeModel::Create(testing::ReadWeights(c, ""), "flownet.pkl", at::kCPU, at::kFloat);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

// "050" -> 0.5, "025" -> 0.25; scale "05" -> 0.5, "2" -> 2.
double Number(const std::string& digits) { return std::stod(digits.substr(0, 1) + "." + digits.substr(1)); }
double Scale(const std::string& digits) { return digits.size() > 1 ? Number(digits) : std::stod(digits); }

void CheckCase(const testing::FixtureCase& c, const char* version) {
  auto model = Load(c);
  ASSERT_TRUE(model);
  EXPECT_EQ(model->version(), version);
  const auto& io = c.io;
  const std::regex out_key(R"(out_t(\d+)(?:_scale(\d+))?)");
  int checked = 0;
  for (const auto& [key, want] : io) {
    std::smatch m;
    if (std::regex_match(key, m, out_key)) {
      const double t = Number(m[1].str());
      const double scale = m[2].matched ? Scale(m[2].str()) : 1.0;
      rife::RifeTrace trace;
      auto got = model->Interpolate(io.at("img0"), io.at("img1"), t, scale, &trace);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_TRUE(testing::AllClose(*got, want, c.atol, c.rtol, key));
      ++checked;
      if (key == "out_t050") {
        for (size_t b = 0; b < trace.block_flow.size(); ++b) {
          const std::string f = "t050_block" + std::to_string(b) + "_flow", k = "t050_block" + std::to_string(b) + "_mask";
          if (io.count(f)) EXPECT_TRUE(testing::AllClose(trace.block_flow[b], io.at(f), c.atol, c.rtol, f)), ++checked;
          if (io.count(k)) EXPECT_TRUE(testing::AllClose(trace.block_mask[b], io.at(k), c.atol, c.rtol, k)), ++checked;
        }
        if (io.count("head_img0")) EXPECT_TRUE(testing::AllClose(trace.head0, io.at("head_img0"), c.atol, c.rtol, "head")), ++checked;
      }
    }
  }
  if (io.count("pad_out_t050")) {
    auto got = model->InterpolatePadded(io.at("pad_img0"), io.at("pad_img1"), 0.5, 1.0);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(testing::AllClose(*got, io.at("pad_out_t050"), c.atol, c.rtol, "pad_out_t050"));
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

TEST(RifeModelTest, V46MatchesTheGoldens) {
  for (const auto& c : testing::CasesOf("rife-v4")) CheckCase(c, "4.6");
}

TEST(RifeModelTest, V425MatchesTheGoldens) {
  for (const auto& c : testing::CasesOf("rife-v4.25")) CheckCase(c, "4.25");
}

TEST(RifeSequenceTest, MultiplierSceneCutsAndFrameCounts) {
  for (const auto& c : testing::CasesOf("rife-v4")) {
    auto model = Load(c);
    ASSERT_TRUE(model);
    // Four frames: a cross-fade of the case's two images.
    const at::Tensor a = c.io.at("img0"), b = c.io.at("img1");
    std::vector<at::Tensor> inputs;
    for (int i = 0; i < 4; ++i) inputs.push_back(a * (1 - i / 3.0) + b * (i / 3.0));
    rife::SequenceOptions o;
    o.gap_frames = rife::GapFrames(2);
    o.scene_threshold = 0;
    rife::FrameInterpolator interp(*model, o);
    std::vector<at::Tensor> out;
    std::vector<bool> made;
    for (const auto& f : inputs) {
      ASSERT_TRUE(interp.Add(f, [&](const at::Tensor& x, bool interpolated, bool) {
                          out.push_back(x);
                          made.push_back(interpolated);
                          return absl::OkStatus();
                        }).ok());
    }
    ASSERT_EQ(out.size(), 7u);  // (n - 1) * 2 + 1
    for (size_t i = 0; i < out.size(); ++i) {
      if (i % 2 == 0) {
        EXPECT_TRUE(at::equal(out[i], inputs[i / 2]));
        EXPECT_FALSE(made[i]);
      } else {
        auto direct = model->InterpolatePadded(inputs[i / 2], inputs[i / 2 + 1], 0.5, 1.0);
        ASSERT_TRUE(direct.ok());
        EXPECT_TRUE(at::equal(out[i], *direct)) << i;
      }
    }
    // x4 closing the loop: n * 4 frames.
    o.gap_frames = rife::GapFrames(4);
    rife::FrameInterpolator loop(*model, o);
    int count = 0;
    auto counter = [&](const at::Tensor&, bool, bool) { ++count; return absl::OkStatus(); };
    for (const auto& f : inputs) ASSERT_TRUE(loop.Add(f, counter).ok());
    ASSERT_TRUE(loop.CloseLoop(counter).ok());
    EXPECT_EQ(count, 16);
    // A scene cut (an image and its negative, shuffled) is detected: the earlier frame is repeated, not blended.
    o.gap_frames = 3;
    o.scene_threshold = 0.2;
    rife::FrameInterpolator cut(*model, o);
    const at::Tensor other = at::rand_like(a);
    std::vector<at::Tensor> cut_out;
    auto keep = [&](const at::Tensor& x, bool, bool scene_cut) {
      if (scene_cut) cut_out.push_back(x);
      return absl::OkStatus();
    };
    ASSERT_TRUE(cut.Add(a, keep).ok());
    ASSERT_TRUE(cut.Add(other, keep).ok());
    EXPECT_EQ(cut.cuts(), 1);
    ASSERT_EQ(cut_out.size(), 3u);
    for (const auto& x : cut_out) EXPECT_TRUE(at::equal(x, a));
    EXPECT_GT(rife::ThumbnailSsim(a, a), 0.999);
    // Different sizes are refused.
    EXPECT_THAT(std::string(cut.Add(at::rand({1, 3, 32, 32}), keep).message()), HasSubstr("one size"));
  }
  // sd-webui-animatediff's count: 16 frames at interp_x 10 -> round((160 - 16) / 15) = 10 per gap.
  EXPECT_EQ(rife::AnimateDiffGapFrames(16, 10), 10);
  EXPECT_EQ(rife::AnimateDiffGapFrames(8, 2), 1);
}

// The reduced-precision path (bfloat16 nets, the warp sampled in float32) stays close to float32: what the plugin
// runs when the daemon computes in bfloat16 (or float16 on CUDA).
TEST(RifeModelTest, Bfloat16StaysCloseToFloat32) {
  for (const auto& c : testing::CasesOf("rife-v4")) {
    auto f32 = Load(c);
    auto bf16 = rife::RifeModel::Create(testing::ReadWeights(c, ""), "flownet.pkl", at::kCPU, at::kBFloat16);
    ASSERT_TRUE(f32 && bf16.ok());
    auto a = f32->Interpolate(c.io.at("img0"), c.io.at("img1"), 0.5, 1.0);
    auto b = (*bf16)->Interpolate(c.io.at("img0"), c.io.at("img1"), 0.5, 1.0);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(b->scalar_type(), at::kFloat);
    const double err = (*a - *b).abs().max().item<double>();
    std::printf("    bfloat16 vs float32 max abs %.4f\n", err);
    EXPECT_LT(err, 0.05);
  }
}

// The released files' key sets and shapes (../shared/manifests) load, with the release's block widths.
TEST(RifeModelTest, ReleasedManifestsLoad) {
  const auto dir = testing::FixturesDir().parent_path() / "manifests";
  const std::pair<const char*, std::vector<int64_t>> manifests[] = {{"rife-v4.6.json", {192, 128, 96, 64}},
                                                                    {"rife-v4.25.json", {192, 128, 96, 64, 32}}};
  for (const auto& [file, widths] : manifests) {
    SCOPED_TRACE(file);
    const auto json = nlohmann::json::parse(std::ifstream(dir / file));
    rife::WeightMap w;
    for (const auto& [name, shape] : json["tensors"].items()) w[name] = at::zeros(shape.get<std::vector<int64_t>>());
    auto m = rife::RifeModel::Create(w, file, at::kCPU, at::kFloat);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->widths(), widths);
    EXPECT_EQ((*m)->version(), std::string(file).find("4.25") != std::string::npos ? "4.25" : "4.6");
  }
}

TEST(RifeModelTest, WrongWeightsAreNamed) {
  for (const auto& c : testing::CasesOf("rife-v4")) {
    auto w = testing::ReadWeights(c, "");
    w.erase("module.block2.convblock.3.beta");
    auto m = rife::RifeModel::Create(w, "flownet.pkl", at::kCPU, at::kFloat);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("block2.convblock.3.beta is missing"));
    auto none = rife::RifeModel::Create({{"x", at::zeros({1})}}, "other.pth", at::kCPU, at::kFloat);
    EXPECT_THAT(std::string(none.status().message()), HasSubstr("not a RIFE IFNet"));
  }
}

}  // namespace
}  // namespace atelier
