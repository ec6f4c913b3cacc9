// FreeInit's filters, diffusion to t = 999 and frequency mix, and the img2img per-frame latent weights, against
// goldens made with PyTorch from sd-webui-animatediff's own definitions (scripts/gen/freeinit_goldens.py).
#include <map>
#include <string>

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "engine/io/tensor_file.h"
#include "freeinit.h"
#include "i2v_latent.h"
#include "test_support.h"

namespace atelier::animatediff {
namespace {

std::map<std::string, at::Tensor> Golden() {
  auto set = engine::ReadTensorSet(std::string(ATELIER_SOURCE_DIR) + "/tests/data/animatediff/freeinit.safetensors");
  EXPECT_TRUE(set.ok()) << set.status();
  std::map<std::string, at::Tensor> out;
  if (set.ok()) {
    for (const auto& [k, v] : set->tensors) out[k] = v.clone();
  }
  return out;
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(FreeInitTest, FiltersMatchTheExtensionsLoops) {
  const auto g = Golden();
  ASSERT_FALSE(g.empty());
  for (const auto& [tag, ds, dt] : {std::tuple{"a", 0.25, 0.25}, std::tuple{"b", 0.6, 0.35}}) {
    for (const std::string method : {"butterworth", "gaussian", "ideal", "box"}) {
      const at::Tensor want = g.at("filter_" + method + "_" + tag);
      auto got = FreeInitFilter(method, static_cast<int>(want.size(0)), static_cast<int>(want.size(1)),
                                static_cast<int>(want.size(2)), ds, dt);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_LE(MaxDiff(*got, want), 1e-7) << method << " " << tag;
    }
  }
  // A cut-off of 0 passes nothing; an unknown method is refused naming the valid ones.
  EXPECT_EQ(FreeInitFilter("gaussian", 4, 4, 4, 0, 0.25)->abs().sum().item<double>(), 0);
  auto bad = FreeInitFilter("median", 4, 4, 4, 0.25, 0.25);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("butterworth"), std::string::npos);
}

TEST(FreeInitTest, DiffusedAndMixedLatentsMatch) {
  const auto g = Golden();
  ASSERT_FALSE(g.empty());
  const at::Tensor diffused = DiffuseToEnd(g.at("x0"), g.at("initial"), g.at("alphas_cumprod"));
  EXPECT_LE(MaxDiff(diffused, g.at("diffused")), 1e-6);
  const at::Tensor lpf = g.at("filter_butterworth_a");
  EXPECT_LE(MaxDiff(FreqMix3d(diffused, g.at("initial"), lpf), g.at("mixed")), 1e-5);
  // An all-pass filter keeps x; an all-stop one gives the noise back.
  EXPECT_LE(MaxDiff(FreqMix3d(diffused, g.at("initial"), at::ones_like(lpf)), diffused), 1e-5);
  EXPECT_LE(MaxDiff(FreqMix3d(diffused, g.at("initial"), at::zeros_like(lpf)), g.at("initial")), 1e-5);
}

TEST(I2vLatentTest, WeightsAndMixMatchRandomize) {
  const auto g = Golden();
  ASSERT_FALSE(g.empty());
  const I2vAlphas alone = I2vLatentAlphas(7, 1.5, 6, false, 1, 3);
  EXPECT_LE(MaxDiff(alone.init, g.at("init_alpha_alone")), 1e-7);
  EXPECT_FALSE(alone.last.defined());
  const I2vAlphas both = I2vLatentAlphas(7, 1.5, 6, true, 1, 3);
  EXPECT_LE(MaxDiff(both.init, g.at("init_alpha")), 1e-7);
  EXPECT_LE(MaxDiff(both.last, g.at("last_alpha")), 1e-7);
  const at::Tensor mixed = MixI2vLatent(both, g.at("init_latent"), g.at("last_latent"), g.at("i2v_noise"));
  EXPECT_LE(MaxDiff(mixed, g.at("i2v_mixed")), 1e-6);
  // A worked case: 4 frames, power 1, scale 2 -> 1, 0.5, 0, 0 (negative weights clamp to 0).
  const at::Tensor worked = I2vLatentAlphas(4, 1, 2, false, 1, 1).init.flatten();
  EXPECT_TRUE(at::equal(worked, at::tensor({1.0f, 0.5f, 0.0f, 0.0f})));
}

}  // namespace
}  // namespace atelier::animatediff
