// LoRA on the tiny fixture checkpoint's UNet: a network written here in kohya naming (a linear layer, a 1x1 conv, a
// 3x3 LoCon conv, a Tucker-form conv) patches exactly the weights of an independent merge (einsum over the published
// definition, not the code under test), gives the eps of a UNet built from the merged weights, restores bit for
// bit, does nothing at weight 0, commutes with a second network, and refuses foreign or LoHa/LoKr files by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "engine/models/lora.h"
#include "engine/models/unet.h"
#include "fixture_case.h"
#include "model_configs.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

struct Net {
  std::map<std::string, at::Tensor> tensors;
  void Add(const std::string& module, at::Tensor up, at::Tensor down, double alpha, at::Tensor mid = at::Tensor()) {
    tensors[module + ".lora_up.weight"] = up.to(at::kHalf);  // as trainers store them
    tensors[module + ".lora_down.weight"] = down.to(at::kHalf);
    tensors[module + ".alpha"] = at::scalar_tensor(alpha);
    if (mid.defined()) tensors[module + ".lora_mid.weight"] = mid.to(at::kHalf);
  }
};

// The published arithmetic, written independently: ΔW = Σ_r up[o, r] · down[r, ...] · alpha / rank.
at::Tensor IndependentDelta(const Net& n, const std::string& module) {
  const at::Tensor up = n.tensors.at(module + ".lora_up.weight").to(at::kFloat);
  const at::Tensor down = n.tensors.at(module + ".lora_down.weight").to(at::kFloat);
  const double scale = n.tensors.at(module + ".alpha").item<double>() / down.size(0);
  if (n.tensors.count(module + ".lora_mid.weight")) {
    const at::Tensor mid = n.tensors.at(module + ".lora_mid.weight").to(at::kFloat);
    return at::einsum("oa,abyx,bc->ocyx", {up.flatten(1), mid, down.flatten(1)}) * scale;
  }
  if (up.dim() == 2) return at::einsum("or,ri->oi", {up, down}) * scale;
  return at::einsum("or,rcyx->ocyx", {up.flatten(1), down}) * scale;
}

TEST(LoraTest, PatchEqualsAnIndependentMergeAndRestoresExactly) {
  for (const auto& c : testing::CasesOf("tiny-sd")) {
    const engine::UNetConfig config = testing::UNetConfigOf(c.json["config"]["unet"]);
    engine::WeightMap weights = testing::ReadWeights(c, "model.diffusion_model.");
    auto unet = engine::UNet::Create(config, weights);
    ASSERT_TRUE(unet.ok()) << unet.status();
    std::vector<std::pair<std::string, size_t>> names;
    for (const auto& [n, shape] : engine::UNet::ParameterShapes(config)) names.emplace_back(n, shape.size());
    const auto map = engine::LoraNameMap::Build(names, {});

    // Targets, by kohya name -> the LDM module they must reach.
    const std::string q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";  // linear
    const std::string proj = "lora_unet_down_blocks_0_attentions_0_proj_in";                       // 1x1 conv
    const std::string conv = "lora_unet_down_blocks_0_resnets_0_conv1";                            // 3x3 LoCon
    const std::string tucker = "lora_unet_mid_block_resnets_0_conv2";                              // Tucker core
    at::manual_seed(7);
    Net a;
    auto wq = weights.at(map.Find(q)->module + ".weight");
    a.Add(q, at::randn({wq.size(0), 4}) * 0.1, at::randn({4, wq.size(1)}) * 0.1, 2.0);
    auto wp = weights.at(map.Find(proj)->module + ".weight");
    a.Add(proj, at::randn({wp.size(0), 2, 1, 1}) * 0.1, at::randn({2, wp.size(1), 1, 1}) * 0.1, 1.0);
    auto wc = weights.at(map.Find(conv)->module + ".weight");
    a.Add(conv, at::randn({wc.size(0), 3, 1, 1}) * 0.1, at::randn({3, wc.size(1), 3, 3}) * 0.1, 3.0);
    auto wt = weights.at(map.Find(tucker)->module + ".weight");
    a.Add(tucker, at::randn({wt.size(0), 2, 1, 1}) * 0.1, at::randn({2, wt.size(1), 1, 1}) * 0.1, 2.0,
          at::randn({2, 2, 3, 3}) * 0.1);
    auto net = engine::LoraNetwork::FromTensors(a.tensors, map, "a.safetensors");
    ASSERT_TRUE(net.ok()) << net.status();

    const at::Tensor x = at::randn({2, 4, 16, 16}), t = at::tensor({500.0f, 20.0f}),
                     ctx = at::randn({2, 77, config.context_dim});
    auto before = (*unet)->Forward(x, t, ctx);
    ASSERT_TRUE(before.ok());
    std::map<std::string, at::Tensor> originals;
    for (const std::string& m : {q, proj, conv, tucker}) {
      const std::string p = map.Find(m)->module + ".weight";
      originals[p] = (*unet)->Parameter(p)->clone();
    }

    const double mult = 0.8;
    auto patch = engine::ApplyLoras(unet->get(), nullptr, {{net->get(), 1.0, mult}});
    ASSERT_TRUE(patch.ok()) << patch.status();
    engine::WeightMap merged = weights;
    for (const std::string& m : {q, proj, conv, tucker}) {
      const std::string p = map.Find(m)->module + ".weight";
      merged[p] = weights.at(p) + mult * IndependentDelta(a, m).reshape(weights.at(p).sizes());
      EXPECT_TRUE(testing::AllClose(*(*unet)->Parameter(p), merged[p], 1e-6, 1e-6, m));
    }
    auto offline = engine::UNet::Create(config, merged);
    ASSERT_TRUE(offline.ok());
    auto patched_eps = (*unet)->Forward(x, t, ctx);
    auto merged_eps = (*offline)->Forward(x, t, ctx);
    ASSERT_TRUE(patched_eps.ok() && merged_eps.ok());
    EXPECT_TRUE(testing::AllClose(*patched_eps, *merged_eps, 1e-5, 1e-5, "eps, patched vs merged offline"));
    EXPECT_FALSE(at::allclose(*patched_eps, *before));

    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *patch).ok());
    for (const auto& [p, w] : originals) EXPECT_TRUE(at::equal(*(*unet)->Parameter(p), w)) << p;
    auto after = (*unet)->Forward(x, t, ctx);
    EXPECT_TRUE(at::equal(*after, *before));

    // Weight 0: the LoRA-less model bit for bit.
    auto zero = engine::ApplyLoras(unet->get(), nullptr, {{net->get(), 0.0, 0.0}});
    ASSERT_TRUE(zero.ok());
    EXPECT_TRUE(at::equal(*(*unet)->Forward(x, t, ctx), *before));
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *zero).ok());

    // Two networks add and commute.
    Net b;
    b.Add(q, at::randn({wq.size(0), 2}) * 0.1, at::randn({2, wq.size(1)}) * 0.1, 1.0);
    auto net_b = engine::LoraNetwork::FromTensors(b.tensors, map, "b.safetensors");
    ASSERT_TRUE(net_b.ok());
    const std::string pq = map.Find(q)->module + ".weight";
    auto ab = engine::ApplyLoras(unet->get(), nullptr, {{net->get(), 1, 0.5}, {net_b->get(), 1, 0.7}});
    const at::Tensor w_ab = (*unet)->Parameter(pq)->clone();
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *ab).ok());
    auto ba = engine::ApplyLoras(unet->get(), nullptr, {{net_b->get(), 1, 0.7}, {net->get(), 1, 0.5}});
    EXPECT_TRUE(testing::AllClose(*(*unet)->Parameter(pq), w_ab, 1e-6, 1e-6, "commute"));
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *ba).ok());

    // Foreign and unsupported files are refused by name.
    Net xl;
    xl.Add("lora_te1_text_model_encoder_layers_0_mlp_fc1", at::zeros({4, 2}), at::zeros({2, 4}), 1.0);
    auto foreign = engine::LoraNetwork::FromTensors(xl.tensors, map, "xl.safetensors");
    EXPECT_EQ(foreign.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(foreign.status().message()), HasSubstr("lora_te1_text_model_encoder_layers_0_mlp_fc1"));
    std::map<std::string, at::Tensor> loha = {{q + ".hada_w1_a", at::zeros({2, 2})}};
    EXPECT_EQ(engine::LoraNetwork::FromTensors(loha, map, "loha.safetensors").status().code(), absl::StatusCode::kUnimplemented);
  }
}

}  // namespace
}  // namespace atelier
