// The SD1.x UNet: full-size parameter names and shapes equal the SD 1.5 release's; the tiny model reproduces the
// unet-tiny goldens (eps for 77/154-token contexts, fractional timesteps, a non-square latent, the time embedding
// and every block output); the plugin extension points (residuals, 21 block hooks, AnimateDiff's GroupNorm over
// frames) behave as specified; bad weights and inputs are clear errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <map>

#include "engine/models/nn_util.h"
#include "engine/models/unet.h"
#include "engine/models/runtime.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "test_support.h"

namespace atelier {
namespace {

using testing::AllClose;
using testing::ManifestShapes;
using testing::Shapes;

// The blocked CPU attention equals softmax(q k^T * scale) v computed whole in float64, whatever the block size
// (a cap of 4 KiB forces blocks of a few queries, and slices that do not divide the query count).
TEST(AttentionTest, BlockedAttentionEqualsTheWholeComputation) {
  at::manual_seed(3);
  const at::Tensor q = at::randn({3, 77, 40}), k = at::randn({3, 50, 40}), v = at::randn({3, 50, 40});
  const double scale = 1.0 / std::sqrt(40.0);
  const at::Tensor want =
      at::bmm(at::softmax(at::bmm(q.to(at::kDouble), k.to(at::kDouble).transpose(1, 2)) * scale, -1), v.to(at::kDouble));
  for (int64_t cap : {int64_t{4} << 10, int64_t{1} << 20}) {
    EXPECT_TRUE(testing::AllClose(engine::Attention(q, k, v, scale, cap), want.to(at::kFloat), 1e-6, 1e-5,
                                  "attention, cap " + std::to_string(cap)));
  }
  const at::Tensor bf = engine::Attention(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), scale);
  EXPECT_EQ(bf.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(testing::AllClose(bf, want.to(at::kFloat), 0.05, 0.05, "attention, bfloat16 inputs"));
}

// Heads side by side [B, T, H*D], read in place on the CPU: the same as splitting into [B*H, T, D] and merging.
TEST(AttentionTest, MultiHeadAttentionEqualsSplitHeads) {
  const int64_t b = 2, n = 77, m = 50, heads = 3, d = 8;
  const at::Tensor q = at::randn({b, n, heads * d}), k = at::randn({b, m, heads * d}), v = at::randn({b, m, heads * d});
  auto split = [&](const at::Tensor& t, int64_t tokens) {
    return t.view({b, tokens, heads, d}).permute({0, 2, 1, 3}).reshape({b * heads, tokens, d});
  };
  const at::Tensor scores = at::bmm(split(q, n), split(k, m).transpose(1, 2)) * 0.3;
  const at::Tensor want =
      at::bmm(at::softmax(scores, -1), split(v, m)).view({b, heads, n, d}).permute({0, 2, 1, 3}).reshape({b, n, heads * d});
  EXPECT_TRUE(testing::AllClose(engine::MultiHeadAttention(q, k, v, heads, 0.3), want, 1e-5, 1e-5, "float32"));
  // Strided inputs (a slice of a wider projection) and bfloat16.
  const at::Tensor wide = at::randn({b, n, 2 * heads * d});
  const at::Tensor q_view = wide.narrow(2, heads * d, heads * d);
  const at::Tensor self_scores = at::bmm(split(q_view.contiguous(), n), split(q_view.contiguous(), n).transpose(1, 2));
  const at::Tensor self_want = at::bmm(at::softmax(self_scores * 0.3, -1), split(q_view.contiguous(), n))
                                   .view({b, heads, n, d}).permute({0, 2, 1, 3}).reshape({b, n, heads * d});
  EXPECT_TRUE(testing::AllClose(engine::MultiHeadAttention(q_view, q_view, q_view, heads, 0.3), self_want, 1e-5, 1e-5,
                                "strided"));
  const at::Tensor bf = engine::MultiHeadAttention(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), heads, 0.3);
  EXPECT_EQ(bf.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(testing::AllClose(bf.to(at::kFloat), want, 0.03, 0.03, "bfloat16"));
}

TEST(UNetTest, FullSizeModelMatchesTheSd15ManifestExactly) {
  const Shapes expected = ManifestShapes("sd15-ldm.json", "model.diffusion_model.");
  ASSERT_EQ(expected.size(), 686u);
  Shapes got;
  for (const auto& [name, shape] : engine::UNet::ParameterShapes(engine::UNetConfig())) got[name] = shape;
  EXPECT_EQ(got, expected);
}

TEST(UNetTest, InpaintingVariantDiffersOnlyInTheInputConvolution) {
  Shapes expected = ManifestShapes("sd15-ldm.json", "model.diffusion_model.");
  expected["input_blocks.0.0.weight"] = {320, 9, 3, 3};
  engine::UNetConfig config;
  config.in_channels = 9;
  Shapes got;
  for (const auto& [name, shape] : engine::UNet::ParameterShapes(config)) got[name] = shape;
  EXPECT_EQ(got, expected);
}

// The case's UNet configuration: its "config", or "config.unet" where the config also describes other parts.
engine::UNetConfig ConfigOf(const testing::FixtureCase& c) {
  const auto& config = c.json["config"];
  return testing::UNetConfigOf(config.contains("unet") ? config["unet"] : config);
}

engine::WeightMap TinyWeights(const testing::FixtureCase& c, at::ScalarType dtype = at::kFloat) {
  return testing::ReadWeights(c, "model.diffusion_model.", dtype);
}

std::unique_ptr<engine::UNet> TinyUNet(const testing::FixtureCase& c, at::ScalarType dtype = at::kFloat) {
  auto unet = engine::UNet::Create(ConfigOf(c), TinyWeights(c, dtype));
  EXPECT_TRUE(unet.ok()) << unet.status();
  return unet.ok() ? *std::move(unet) : nullptr;
}

std::string Index2(size_t i) { return (i < 10 ? "0" : "") + std::to_string(i); }

TEST(UNetTest, TinyModelReproducesTheGoldens) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const auto& io = c.io;
    engine::UNetTrace trace;
    engine::UNetCallOptions options;
    options.trace = &trace;
    auto eps = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
    ASSERT_TRUE(eps.ok()) << eps.status();
    EXPECT_TRUE(AllClose(*eps, io.at("eps"), c.atol, c.rtol, "eps"));
    EXPECT_TRUE(AllClose(trace.t_emb, io.at("t_emb"), c.atol, c.rtol, "t_emb"));
    EXPECT_TRUE(AllClose(trace.emb, io.at("emb"), c.atol, c.rtol, "emb"));
    // LDM's block counts for the case's levels: conv_in, num_res_blocks per level and a downsampler between
    // levels on the way down; num_res_blocks + 1 per level on the way up.
    const engine::UNetConfig config = ConfigOf(c);
    const size_t levels = config.channel_mult.size();
    const size_t res_blocks = static_cast<size_t>(config.num_res_blocks);
    ASSERT_EQ(trace.input_blocks.size(), 1 + levels * res_blocks + (levels - 1));
    ASSERT_EQ(trace.output_blocks.size(), levels * (res_blocks + 1));
    ASSERT_EQ(trace.input_blocks.size(), trace.output_blocks.size());
    for (size_t i = 0; i < trace.input_blocks.size(); ++i) {
      EXPECT_TRUE(AllClose(trace.input_blocks[i][0].unsqueeze(0), io.at("intermediate.input_block_" + Index2(i)),
                           c.atol, c.rtol, "input_block_" + Index2(i)));
      EXPECT_TRUE(AllClose(trace.output_blocks[i][0].unsqueeze(0), io.at("intermediate.output_block_" + Index2(i)),
                           c.atol, c.rtol, "output_block_" + Index2(i)));
    }
    EXPECT_TRUE(AllClose(trace.middle_block[0].unsqueeze(0), io.at("intermediate.middle_block"), c.atol, c.rtol,
                         "middle_block"));

    auto long_context = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context_154"));
    ASSERT_TRUE(long_context.ok()) << long_context.status();
    EXPECT_TRUE(AllClose(*long_context, io.at("eps_context_154"), c.atol, c.rtol, "154-token context"));
    auto frac = unet->Forward(io.at("x"), io.at("timesteps_frac"), io.at("context"));
    ASSERT_TRUE(frac.ok()) << frac.status();
    EXPECT_TRUE(AllClose(*frac, io.at("eps_timesteps_frac"), c.atol, c.rtol, "fractional timesteps"));
    auto nonsquare = unet->Forward(io.at("x_nonsquare"), io.at("timesteps_nonsquare"), io.at("context_nonsquare"));
    ASSERT_TRUE(nonsquare.ok()) << nonsquare.status();
    EXPECT_TRUE(AllClose(*nonsquare, io.at("eps_nonsquare"), c.atol, c.rtol, "non-square latent"));
  }
}

// bf16 weights and activations (the fast CPU path): relative RMS error against the float32 goldens within 3%.
TEST(UNetTest, Bfloat16StaysCloseToTheFloat32Goldens) {
  if (!engine::CpuBf16Supported(engine::DetectCpuFeatures())) {
    GTEST_SKIP() << "this CPU lacks AVX-512 BW/VL/DQ: libtorch has no proper bf16 path here (the daemon refuses "
                    "--dtype bfloat16)";
  }
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c, at::kBFloat16);
    ASSERT_NE(unet, nullptr);
    EXPECT_EQ(unet->dtype(), at::kBFloat16);
    auto eps = unet->Forward(c.io.at("x"), c.io.at("timesteps"), c.io.at("context"));
    ASSERT_TRUE(eps.ok()) << eps.status();
    EXPECT_EQ(eps->scalar_type(), at::kFloat);
    EXPECT_LE(testing::RelativeRmsError(*eps, c.io.at("eps"), "bf16 eps vs f32 goldens"), 0.03);
  }
}

TEST(UNetTest, SizesThatAreMultiplesOf8ButNot64MatchSkipsAsWebUiDoes) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const at::Tensor x = at::randn({1, ConfigOf(c).in_channels, 13, 19});  // 104x152 pixels
    auto eps = unet->Forward(x, at::full({1}, 500.0f), c.io.at("context").narrow(0, 0, 1));
    ASSERT_TRUE(eps.ok()) << eps.status();
    EXPECT_EQ(eps->sizes(), x.sizes());
    EXPECT_TRUE(at::isfinite(*eps).all().item<bool>());
  }
}

TEST(UNetTest, ResidualsAreAddedToTheSkipsAndTheMiddleOutput) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const auto& io = c.io;
    engine::UNetTrace trace;
    engine::UNetCallOptions traced;
    traced.trace = &trace;
    auto base = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), traced);
    ASSERT_TRUE(base.ok());

    // Zero residuals change nothing; a residual of -skip removes that skip's content.
    std::array<at::Tensor, engine::kUNetResiduals> residuals;
    constexpr int kMiddle = engine::kUNetResiduals - 1;  // the skips in input block order, then the middle block
    ASSERT_EQ(trace.input_blocks.size(), static_cast<size_t>(kMiddle));
    for (int i = 0; i < kMiddle; ++i) residuals[i] = at::zeros_like(trace.input_blocks[i]);
    residuals[kMiddle] = at::zeros_like(trace.middle_block);
    engine::UNetCallOptions with;
    with.residuals = &residuals;
    auto zero = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), with);
    ASSERT_TRUE(zero.ok());
    EXPECT_TRUE(at::equal(*zero, *base));

    // A middle residual changes the result.
    residuals[kMiddle] = at::ones_like(trace.middle_block);
    auto shifted = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), with);
    ASSERT_TRUE(shifted.ok());
    EXPECT_FALSE(at::allclose(*shifted, *base));

    // A residual on skip 11 (consumed by output block 0) leaves the down path alone and changes output block 0.
    residuals[kMiddle] = at::Tensor();
    residuals[11] = -trace.input_blocks[11];
    engine::UNetTrace trace2;
    engine::UNetCallOptions with_trace = with;
    with_trace.trace = &trace2;
    auto zeroed = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), with_trace);
    ASSERT_TRUE(zeroed.ok());
    EXPECT_TRUE(at::equal(trace2.input_blocks[11], trace.input_blocks[11]));  // residuals never touch the down path
    EXPECT_FALSE(at::allclose(trace2.output_blocks[0], trace.output_blocks[0]));

    residuals[11] = at::zeros({1, 1, 1, 1});
    auto bad = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), with);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("residual 11"), std::string::npos) << bad.status();
  }
}

// The reference-attention hook (ABI 1.2 self_attention): appending a layer's own input to its keys and values
// duplicates every key, which leaves softmax attention unchanged (an independent fact); a plain weight of 1 gives
// the plain attention whatever the context; another context changes the result; layers come in forward order.
TEST(UNetTest, SelfAttentionHookAppendsKeysAndValues) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const auto& io = c.io;
    auto base = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"));
    ASSERT_TRUE(base.ok());
    std::vector<int> layers;
    engine::UNetCallOptions self;
    self.attention_hook = [&](int layer, const at::Tensor& hidden) -> absl::StatusOr<engine::SelfAttentionExtra> {
      layers.push_back(layer);
      return engine::SelfAttentionExtra{hidden.clone(), at::Tensor()};
    };
    auto same = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), self);
    ASSERT_TRUE(same.ok()) << same.status();
    EXPECT_TRUE(testing::AllClose(*same, *base, 1e-5, 1e-4, "duplicated keys"));
    ASSERT_FALSE(layers.empty());
    for (size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(layers[i], static_cast<int>(i));

    engine::UNetCallOptions other;
    other.attention_hook = [&](int, const at::Tensor& hidden) -> absl::StatusOr<engine::SelfAttentionExtra> {
      return engine::SelfAttentionExtra{at::ones_like(hidden), at::Tensor()};
    };
    auto moved = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), other);
    ASSERT_TRUE(moved.ok());
    EXPECT_FALSE(at::allclose(*moved, *base, 1e-4, 1e-4));

    engine::UNetCallOptions plain;
    plain.attention_hook = [&](int, const at::Tensor& hidden) -> absl::StatusOr<engine::SelfAttentionExtra> {
      return engine::SelfAttentionExtra{at::ones_like(hidden), at::ones({hidden.size(0)})};
    };
    auto back = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), plain);
    ASSERT_TRUE(back.ok());
    EXPECT_TRUE(testing::AllClose(*back, *base, 1e-5, 1e-4, "plain weight 1"));

    engine::UNetCallOptions failing;
    failing.attention_hook = [&](int, const at::Tensor&) -> absl::StatusOr<engine::SelfAttentionExtra> {
      return absl::InvalidArgumentError("no bank");
    };
    auto failed = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), failing);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("no bank"), std::string::npos) << failed.status();
  }
}

// The block-end hook (ABI 1.2 unet_block_end) sees the 12 input blocks, the middle block and the 12 output blocks in
// forward order; returning the same tensors changes nothing; a changed middle output changes the result.
TEST(UNetTest, BlockEndHookSeesEveryWholeBlock) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const auto& io = c.io;
    auto base = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"));
    ASSERT_TRUE(base.ok());
    std::vector<std::pair<int, int>> seen;
    engine::UNetCallOptions options;
    options.block_end_hook = [&](engine::UNetBlockKind kind, int index, at::Tensor&) {
      seen.emplace_back(static_cast<int>(kind), index);
      return absl::OkStatus();
    };
    auto same = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
    ASSERT_TRUE(same.ok());
    EXPECT_TRUE(at::equal(*same, *base));
    const engine::UNetConfig config = testing::UNetConfigOf(c.json["config"]);
    const size_t levels = config.channel_mult.size();
    const size_t inputs = 1 + levels * config.num_res_blocks + (levels - 1);
    ASSERT_EQ(seen.size(), 2 * inputs + 1);
    for (size_t i = 0; i < inputs; ++i) {
      EXPECT_EQ(seen[i], std::make_pair(0, static_cast<int>(i)));
      EXPECT_EQ(seen[inputs + 1 + i], std::make_pair(2, static_cast<int>(i)));
    }
    EXPECT_EQ(seen[inputs], std::make_pair(1, 0));
    options.block_end_hook = [&](engine::UNetBlockKind kind, int, at::Tensor& h) {
      if (kind == engine::UNetBlockKind::kMiddle) h = h * 0.5;
      return absl::OkStatus();
    };
    auto changed = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
    ASSERT_TRUE(changed.ok());
    EXPECT_FALSE(at::allclose(*changed, *base));
  }
}

TEST(UNetTest, BlockHookSeesTheTwentyOnePointsInOrder) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const auto& io = c.io;
    auto base = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"));
    ASSERT_TRUE(base.ok());
    std::vector<engine::UNetBlockPoint> seen;
    std::vector<int64_t> channels;
    engine::UNetCallOptions options;
    options.block_hook = [&](const engine::UNetBlockPoint& where, at::Tensor& hidden) {
      seen.push_back(where);
      channels.push_back(hidden.size(1));
      return absl::OkStatus();
    };
    auto identity = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
    ASSERT_TRUE(identity.ok());
    EXPECT_TRUE(at::equal(*identity, *base));
    ASSERT_EQ(seen.size(), static_cast<size_t>(engine::kUNetBlockPoints));
    const int input_index[] = {1, 2, 4, 5, 7, 8, 10, 11};
    for (int p = 0; p < 21; ++p) {
      EXPECT_EQ(seen[p].point, p);
      if (p < 8) {
        EXPECT_EQ(seen[p].kind, engine::UNetBlockKind::kInput);
        EXPECT_EQ(seen[p].index, input_index[p]);
      } else if (p == 8) {
        EXPECT_EQ(seen[p].kind, engine::UNetBlockKind::kMiddle);
      } else {
        EXPECT_EQ(seen[p].kind, engine::UNetBlockKind::kOutput);
        EXPECT_EQ(seen[p].index, p - 9);
      }
    }
    // Output blocks 2, 5 and 8 call the hook before their upsampler: at the lower resolution, with the block's
    // output channels. Output block 2 is the last of the deepest level: model_channels * channel_mult.back() (64 at
    // level 3, 32 below in the public tiny model).
    const engine::UNetConfig config = ConfigOf(c);
    ASSERT_FALSE(config.channel_mult.empty());
    EXPECT_EQ(channels[9 + 2], static_cast<int64_t>(config.model_channels) * config.channel_mult.back());

    // A hook that changes the hidden state changes eps; one that returns another shape or fails is an error.
    options.block_hook = [&](const engine::UNetBlockPoint& where, at::Tensor& hidden) {
      if (where.point == 8) hidden = hidden * 2;
      return absl::OkStatus();
    };
    auto changed = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
    ASSERT_TRUE(changed.ok());
    EXPECT_FALSE(at::allclose(*changed, *base));
    options.block_hook = [&](const engine::UNetBlockPoint&, at::Tensor& hidden) {
      hidden = hidden.narrow(0, 0, 1);
      return absl::OkStatus();
    };
    EXPECT_EQ(unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options).status().code(),
              absl::StatusCode::kInvalidArgument);
    options.block_hook = [&](const engine::UNetBlockPoint&, at::Tensor&) {
      return absl::FailedPreconditionError("motion module broke");
    };
    auto failed = unet->Forward(io.at("x"), io.at("timesteps"), io.at("context"), options);
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// AnimateDiff v1 normalises each video over its frames. Two identical frames have the statistics of one, so the
// result equals the per-frame one; two different frames do not.
// A UNet of another shape (the embedded model's: 2 levels of 1 ResBlock) numbers its points the same way: after each
// ResBlock input block, the middle, then every output block (before the upsampler of a level's last one).
TEST(UNetTest, BlockHookNumbersThePointsOfAnotherShapeTheSameWay) {
  engine::UNetConfig config;
  config.model_channels = 32;
  config.channel_mult = {1, 2};
  config.num_res_blocks = 1;
  config.attention_resolutions = {1, 2};
  config.num_heads = 4;
  config.context_dim = 32;
  engine::WeightMap weights;
  at::manual_seed(3);
  for (const auto& [name, shape] : engine::UNet::ParameterShapes(config)) weights[name] = at::randn(shape) * 0.05;
  auto unet = engine::UNet::Create(config, weights);
  ASSERT_TRUE(unet.ok()) << unet.status();
  const at::Tensor x = at::randn({2, 4, 8, 8}), t = at::full({2}, 500.0), ctx = at::randn({2, 7, 32});
  std::vector<engine::UNetBlockPoint> seen;
  std::vector<int64_t> side;
  engine::UNetCallOptions options;
  options.block_hook = [&](const engine::UNetBlockPoint& where, at::Tensor& hidden) {
    seen.push_back(where);
    side.push_back(hidden.size(2));
    return absl::OkStatus();
  };
  ASSERT_TRUE((*unet)->Forward(x, t, ctx, options).ok());
  // Input blocks 1 (level 0) and 3 (level 1; block 2 is the downsampler), the middle, output blocks 0..3.
  const std::vector<std::pair<engine::UNetBlockKind, int>> want = {
      {engine::UNetBlockKind::kInput, 1},  {engine::UNetBlockKind::kInput, 3},  {engine::UNetBlockKind::kMiddle, 0},
      {engine::UNetBlockKind::kOutput, 0}, {engine::UNetBlockKind::kOutput, 1}, {engine::UNetBlockKind::kOutput, 2},
      {engine::UNetBlockKind::kOutput, 3}};
  ASSERT_EQ(seen.size(), want.size());
  for (size_t p = 0; p < want.size(); ++p) {
    EXPECT_EQ(seen[p].point, static_cast<int>(p));
    EXPECT_EQ(seen[p].kind, want[p].first) << p;
    EXPECT_EQ(seen[p].index, want[p].second) << p;
  }
  // Output block 1 ends its level with an upsampler: the hook sees the state before it (4x4, not 8x8).
  EXPECT_EQ(side, (std::vector<int64_t>{8, 4, 4, 4, 4, 8, 8}));
}

TEST(UNetTest, GroupNormOverFramesNormalisesVideosJointly) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const at::Tensor frame = c.io.at("x").narrow(0, 0, 1);
    const at::Tensor x = at::cat({frame, frame});
    const at::Tensor t = at::full({2}, 700.0f);
    const at::Tensor ctx = c.io.at("context").narrow(0, 0, 1).repeat({2, 1, 1});
    engine::UNetCallOptions video;
    video.frames_per_video = 2;
    auto plain = unet->Forward(x, t, ctx);
    auto joint = unet->Forward(x, t, ctx, video);
    ASSERT_TRUE(plain.ok() && joint.ok());
    EXPECT_TRUE(AllClose(*joint, *plain, 1e-5, 1e-5, "identical frames, joint vs per-frame"));
    const at::Tensor different = c.io.at("x");
    auto plain2 = unet->Forward(different, t, ctx);
    auto joint2 = unet->Forward(different, t, ctx, video);
    ASSERT_TRUE(plain2.ok() && joint2.ok());
    EXPECT_FALSE(at::allclose(*joint2, *plain2, 1e-4, 1e-4));
    video.frames_per_video = 3;
    EXPECT_EQ(unet->Forward(x, t, ctx, video).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// An inpainting UNet whose 5 extra input channels have zero weights computes the same eps as the plain model.
TEST(UNetTest, InpaintingModelTakesNineChannels) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    engine::WeightMap weights = TinyWeights(c);
    const at::Tensor w = weights.at("input_blocks.0.0.weight");
    // The mask (1 channel) and the masked image's latent (4 channels) follow the latent.
    constexpr int64_t kExtra = 5;
    weights["input_blocks.0.0.weight"] = at::cat({w, at::zeros({w.size(0), kExtra, w.size(2), w.size(3)})}, 1);
    engine::UNetConfig config = ConfigOf(c);
    config.in_channels += kExtra;
    auto unet = engine::UNet::Create(config, weights);
    ASSERT_TRUE(unet.ok()) << unet.status();
    const at::Tensor x0 = c.io.at("x");
    const at::Tensor x = at::cat({x0, at::randn({x0.size(0), kExtra, x0.size(2), x0.size(3)})}, 1);
    auto eps = (*unet)->Forward(x, c.io.at("timesteps"), c.io.at("context"));
    ASSERT_TRUE(eps.ok()) << eps.status();
    EXPECT_TRUE(AllClose(*eps, c.io.at("eps"), c.atol, c.rtol, "inpainting model, zero mask weights"));
    EXPECT_EQ((*unet)->Forward(c.io.at("x"), c.io.at("timesteps"), c.io.at("context")).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(UNetTest, BadWeightsAreNamed) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    const engine::WeightMap good = TinyWeights(c);
    engine::WeightMap missing = good;
    missing.erase("middle_block.1.proj_in.weight");
    auto a = engine::UNet::Create(ConfigOf(c), missing);
    ASSERT_FALSE(a.ok());
    EXPECT_NE(a.status().message().find("missing: model.diffusion_model.middle_block.1.proj_in.weight"),
              std::string::npos)
        << a.status();
    engine::WeightMap extra = good;
    extra["input_blocks.1.2.weight"] = at::zeros({1});
    auto b = engine::UNet::Create(ConfigOf(c), extra);
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.status().message().find("unexpected: model.diffusion_model.input_blocks.1.2.weight"),
              std::string::npos)
        << b.status();
    engine::WeightMap misshaped = good;
    const at::Tensor out_conv = good.at("out.2.weight");  // [out_channels, model_channels, 3, 3]
    ASSERT_EQ(out_conv.dim(), 4);
    misshaped["out.2.weight"] = at::zeros({out_conv.size(0), out_conv.size(1), 1, 1});
    auto d = engine::UNet::Create(ConfigOf(c), misshaped);
    ASSERT_FALSE(d.ok());
    const std::string oc = std::to_string(out_conv.size(0)), ic = std::to_string(out_conv.size(1));
    EXPECT_NE(d.status().message().find("out.2.weight is [" + oc + ", " + ic + ", 1, 1], expected [" + oc + ", " + ic +
                                        ", " + std::to_string(out_conv.size(2)) + ", " +
                                        std::to_string(out_conv.size(3)) + "]"),
              std::string::npos)
        << d.status();
  }
}

TEST(UNetTest, BadInputsAreInvalidArgument) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    auto unet = TinyUNet(c);
    ASSERT_NE(unet, nullptr);
    const auto& io = c.io;
    auto code = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& ctx) {
      return unet->Forward(x, t, ctx).status().code();
    };
    const engine::UNetConfig config = ConfigOf(c);
    const at::Tensor& x = io.at("x");
    const at::Tensor& context = io.at("context");
    const int64_t batch = x.size(0), tokens = context.size(1), other_batch = batch > 1 ? batch - 1 : batch + 1;
    // Wrong latent channels, one timestep too many, the wrong context width, a context batch of another size.
    EXPECT_EQ(code(at::zeros({batch, config.in_channels - 1, x.size(2), x.size(3)}), io.at("timesteps"), context),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(code(x, at::zeros({batch + 1}), context), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(code(x, io.at("timesteps"), at::zeros({batch, tokens, config.context_dim - 1})),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(code(x, io.at("timesteps"), at::zeros({other_batch, tokens, config.context_dim})),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace atelier

namespace atelier {
namespace {

// The UNet's encoder half alone (what a ControlNet plugin builds on through the SDK) reproduces the unet-tiny
// goldens of every input block and the middle block; `after_first` enters after input block 0, as a ControlNet's
// guided hint does.
TEST(UNetEncoderTest, ReproducesTheEncoderGoldens) {
  for (const auto& c : testing::CasesOf("unet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto encoder = engine::UNetEncoder::Create(ConfigOf(c), TinyWeights(c), "model.diffusion_model");
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    const auto& io = c.io;
    auto out = (*encoder)->Forward(io.at("x"), io.at("timesteps"), io.at("context"));
    ASSERT_TRUE(out.ok()) << out.status();
    const engine::UNetConfig config = ConfigOf(c);
    const size_t levels = config.channel_mult.size(), res_blocks = static_cast<size_t>(config.num_res_blocks);
    ASSERT_EQ(out->input_blocks.size(), 1 + levels * res_blocks + (levels - 1));
    for (size_t i = 0; i < out->input_blocks.size(); ++i) {
      EXPECT_TRUE(AllClose(out->input_blocks[i][0].unsqueeze(0), io.at("intermediate.input_block_" + Index2(i)),
                           c.atol, c.rtol, "input_block_" + Index2(i)));
    }
    EXPECT_TRUE(AllClose(out->middle_block[0].unsqueeze(0), io.at("intermediate.middle_block"), c.atol, c.rtol,
                         "middle_block"));
    const at::Tensor shift = at::ones_like(out->input_blocks[0]);
    auto shifted = (*encoder)->Forward(io.at("x"), io.at("timesteps"), io.at("context"), shift);
    ASSERT_TRUE(shifted.ok()) << shifted.status();
    EXPECT_TRUE(at::allclose(shifted->input_blocks[0], out->input_blocks[0] + 1));
    EXPECT_FALSE(at::allclose(shifted->middle_block, out->middle_block));
    auto wrong = (*encoder)->Forward(io.at("x"), io.at("timesteps"), io.at("context"), shift.slice(1, 0, 1));
    EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// A ControlNet's control_model weights build the encoder: it takes time_embed, input_blocks and middle_block and
// leaves the rest (zero convs, hint encoder) to the plugin; a missing block weight is named.
TEST(UNetEncoderTest, BuildsFromAControlNetsWeights) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    const auto& j = c.json["config"]["controlnet"];
    engine::UNetConfig config;
    config.in_channels = j["in_channels"];
    config.model_channels = j["model_channels"];
    config.attention_resolutions = j["attention_resolutions"].get<std::vector<int>>();
    config.num_res_blocks = j["num_res_blocks"];
    config.channel_mult = j["channel_mult"].get<std::vector<int>>();
    config.num_heads = j["num_heads"];
    config.transformer_depth = j["transformer_depth"];
    config.context_dim = j["context_dim"];
    engine::WeightMap weights = testing::ReadWeights(c, "control_model.");
    ASSERT_TRUE(weights.count("zero_convs.0.0.weight") && weights.count("input_hint_block.0.weight"));
    auto encoder = engine::UNetEncoder::Create(config, weights, "control_model");
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    const auto& io = c.io;
    auto out = (*encoder)->Forward(io.at("x"), io.at("timesteps"), io.at("context"));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->input_blocks.size(), 12u);
    // Each block's output has the shape of the residual the ControlNet's zero conv makes from it.
    for (size_t i = 0; i < out->input_blocks.size(); ++i) {
      EXPECT_EQ(out->input_blocks[i].sizes(), io.at("control_" + Index2(i)).sizes()) << i;
    }
    EXPECT_EQ(out->middle_block.sizes(), io.at("control_12").sizes());
    weights.erase("middle_block.1.proj_in.weight");
    auto missing = engine::UNetEncoder::Create(config, weights, "control_model");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(std::string(missing.status().message()).find("control_model.middle_block.1.proj_in.weight"),
              std::string::npos)
        << missing.status();
  }
}

}  // namespace
}  // namespace atelier
