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
    std::map<std::string, at::Tensor> ia3 = {{q + ".weight", at::zeros({2})}};
    EXPECT_EQ(engine::LoraNetwork::FromTensors(ia3, map, "ia3.safetensors").status().code(), absl::StatusCode::kUnimplemented);
    std::map<std::string, at::Tensor> motion = {
        {"lora_unet_down_blocks_0_motion_modules_0_temporal_transformer_proj_in.lora_up.weight", at::zeros({2, 2})}};
    // A motion LoRA's keys are the AnimateDiff plugin's (it patches the motion module): the UNet's patch skips them.
    auto motion_lora = engine::LoraNetwork::FromTensors(motion, map, "v2_lora_ZoomIn.ckpt");
    ASSERT_TRUE(motion_lora.ok()) << motion_lora.status();
    EXPECT_TRUE((*motion_lora)->modules().empty());
    std::map<std::string, at::Tensor> half_loha = {{q + ".hada_w1_a", at::zeros({2, 2})}};
    auto incomplete = engine::LoraNetwork::FromTensors(half_loha, map, "loha.safetensors");
    EXPECT_EQ(incomplete.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(incomplete.status().message()), HasSubstr("incomplete"));
  }
}

// Merges `delta` (already scaled) times `mult` into a copy of the weights and compares the patched parameter.
void ExpectPatchEquals(engine::UNet& unet, const std::string& param, const at::Tensor& original, const at::Tensor& delta,
                       double mult, const std::string& what) {
  const at::Tensor expected = original + mult * delta.reshape(original.sizes());
  EXPECT_TRUE(testing::AllClose(*unet.Parameter(param), expected, 1e-6, 1e-6, what));
}

TEST(LoraTest, LohaLokrDoraDynAndPeftKeysMatchThePublishedArithmetic) {
  for (const auto& c : testing::CasesOf("tiny-sd")) {
    const engine::UNetConfig config = testing::UNetConfigOf(c.json["config"]["unet"]);
    engine::WeightMap weights = testing::ReadWeights(c, "model.diffusion_model.");
    auto unet = engine::UNet::Create(config, weights);
    ASSERT_TRUE(unet.ok()) << unet.status();
    std::vector<std::pair<std::string, size_t>> names;
    for (const auto& [n, shape] : engine::UNet::ParameterShapes(config)) names.emplace_back(n, shape.size());
    const auto map = engine::LoraNameMap::Build(names, {});
    const std::string q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k";
    const std::string conv = "lora_unet_down_blocks_0_resnets_0_conv1";
    const std::string pq = map.Find(q)->module + ".weight", pk = map.Find(k)->module + ".weight",
                      pc = map.Find(conv)->module + ".weight";
    const at::Tensor wq = weights.at(pq), wk = weights.at(pk), wc = weights.at(pc);
    at::manual_seed(11);
    const auto r = [](std::vector<int64_t> s) { return at::randn(s) * 0.1; };

    // LoHa on a linear: ΔW = (w1a w1b) ⊙ (w2a w2b) · alpha / rank.
    std::map<std::string, at::Tensor> loha = {{q + ".hada_w1_a", r({wq.size(0), 3})}, {q + ".hada_w1_b", r({3, wq.size(1)})},
                                              {q + ".hada_w2_a", r({wq.size(0), 3})}, {q + ".hada_w2_b", r({3, wq.size(1)})},
                                              {q + ".alpha", at::scalar_tensor(1.5)}};
    // LoHa on a 3x3 conv with Tucker cores: half = Σ t[a,b,y,x] wa[a,o] wb[b,i].
    const int64_t co = wc.size(0), ci = wc.size(1);
    loha[conv + ".hada_w1_a"] = r({2, co});
    loha[conv + ".hada_w1_b"] = r({2, ci});
    loha[conv + ".hada_t1"] = r({2, 2, 3, 3});
    loha[conv + ".hada_w2_a"] = r({2, co});
    loha[conv + ".hada_w2_b"] = r({2, ci});
    loha[conv + ".hada_t2"] = r({2, 2, 3, 3});
    loha[conv + ".alpha"] = at::scalar_tensor(4.0);
    auto loha_net = engine::LoraNetwork::FromTensors(loha, map, "loha.safetensors");
    ASSERT_TRUE(loha_net.ok()) << loha_net.status();
    const at::Tensor dq = at::einsum("or,ri->oi", {loha[q + ".hada_w1_a"], loha[q + ".hada_w1_b"]}) *
                          at::einsum("or,ri->oi", {loha[q + ".hada_w2_a"], loha[q + ".hada_w2_b"]}) * (1.5 / 3);
    const auto tucker = [&](const char* t, const char* a, const char* b) {
      return at::einsum("abyx,ao,bi->oiyx", {loha[conv + t], loha[conv + a], loha[conv + b]});
    };
    const at::Tensor dc = tucker(".hada_t1", ".hada_w1_a", ".hada_w1_b") * tucker(".hada_t2", ".hada_w2_a", ".hada_w2_b") * (4.0 / 2);
    auto patch = engine::ApplyLoras(unet->get(), nullptr, {{loha_net->get(), 1.0, 0.6}});
    ASSERT_TRUE(patch.ok()) << patch.status();
    ExpectPatchEquals(**unet, pq, wq, dq, 0.6, "LoHa linear");
    ExpectPatchEquals(**unet, pc, wc, dc, 0.6, "LoHa Tucker conv");
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *patch).ok());
    EXPECT_TRUE(at::equal(*(*unet)->Parameter(pq), wq));

    // LoKr: w1 full [2, 2], w2 = w2a w2b on the linear; w2 a full 3x3 kernel on the conv. Kronecker by its index
    // definition: out[i·P + p, j·Q + q, ...] = w1[i, j] · w2[p, q, ...].
    std::map<std::string, at::Tensor> lokr = {
        {q + ".lokr_w1", r({2, 2})}, {q + ".lokr_w2_a", r({wq.size(0) / 2, 4})}, {q + ".lokr_w2_b", r({4, wq.size(1) / 2})},
        {q + ".alpha", at::scalar_tensor(2.0)}, {conv + ".lokr_w1", r({2, 2})}, {conv + ".lokr_w2", r({co / 2, ci / 2, 3, 3})},
        {conv + ".alpha", at::scalar_tensor(8.0)}};  // full w1 and w2: alpha is ignored (scale 1)
    auto lokr_net = engine::LoraNetwork::FromTensors(lokr, map, "lokr.safetensors");
    ASSERT_TRUE(lokr_net.ok()) << lokr_net.status();
    const at::Tensor w2q = at::einsum("pr,rq->pq", {lokr[q + ".lokr_w2_a"], lokr[q + ".lokr_w2_b"]});
    const at::Tensor kq = at::einsum("ij,pq->ipjq", {lokr[q + ".lokr_w1"], w2q}).reshape(wq.sizes()) * (2.0 / 4);
    const at::Tensor kc = at::einsum("ij,pqyx->ipjqyx", {lokr[conv + ".lokr_w1"], lokr[conv + ".lokr_w2"]}).reshape(wc.sizes());
    patch = engine::ApplyLoras(unet->get(), nullptr, {{lokr_net->get(), 1.0, 1.25}});
    ASSERT_TRUE(patch.ok()) << patch.status();
    ExpectPatchEquals(**unet, pq, wq, kq, 1.25, "LoKr linear");
    ExpectPatchEquals(**unet, pc, wc, kc, 1.25, "LoKr conv");
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *patch).ok());

    // dyn= keeps the first ranks (the scale still uses the full rank); DoRA re-normalises per input channel.
    std::map<std::string, at::Tensor> plain = {{q + ".lora_up.weight", r({wq.size(0), 4})},
                                               {q + ".lora_down.weight", r({4, wq.size(1)})},
                                               {q + ".alpha", at::scalar_tensor(2.0)}};
    auto plain_net = engine::LoraNetwork::FromTensors(plain, map, "plain.safetensors");
    ASSERT_TRUE(plain_net.ok());
    patch = engine::ApplyLoras(unet->get(), nullptr, {{plain_net->get(), 1.0, 1.0, 2}});
    ASSERT_TRUE(patch.ok());
    const at::Tensor dyn2 = at::einsum("or,ri->oi", {plain[q + ".lora_up.weight"].slice(1, 0, 2),
                                                     plain[q + ".lora_down.weight"].slice(0, 0, 2)}) * (2.0 / 4);
    ExpectPatchEquals(**unet, pq, wq, dyn2, 1.0, "dyn=2");
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *patch).ok());

    std::map<std::string, at::Tensor> dora = plain;
    dora[q + ".dora_scale"] = at::rand({1, wq.size(1)}) + 0.5;
    auto dora_net = engine::LoraNetwork::FromTensors(dora, map, "dora.safetensors");
    ASSERT_TRUE(dora_net.ok());
    patch = engine::ApplyLoras(unet->get(), nullptr, {{dora_net->get(), 1.0, 0.5}});
    ASSERT_TRUE(patch.ok()) << patch.status();
    const at::Tensor merged = wq + at::einsum("or,ri->oi", {plain[q + ".lora_up.weight"], plain[q + ".lora_down.weight"]}) * 0.5;
    const at::Tensor column_norm = merged.pow(2).sum(0, true).sqrt();
    ExpectPatchEquals(**unet, pq, wq, merged * dora[q + ".dora_scale"] / column_norm - wq, 0.5, "DoRA");
    ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *patch).ok());

    // The diffusers / PEFT forms name the same modules (lora_A / lora_B: scale 1, as WebUI reads them).
    const at::Tensor a = r({2, wk.size(1)}), b = r({wk.size(0), 2});
    std::map<std::string, at::Tensor> peft = {
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora_A.weight", a},
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora_B.weight", b}};
    std::map<std::string, at::Tensor> procs = {
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.down.weight", a},
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.up.weight", b}};
    for (const auto& [label, tensors] : {std::make_pair("peft", peft), std::make_pair("attn procs", procs)}) {
      auto net = engine::LoraNetwork::FromTensors(tensors, map, label);
      ASSERT_TRUE(net.ok()) << label << ": " << net.status();
      patch = engine::ApplyLoras(unet->get(), nullptr, {{net->get(), 1.0, 1.0}});
      ASSERT_TRUE(patch.ok());
      ExpectPatchEquals(**unet, pk, wk, at::einsum("or,ri->oi", {b, a}), 1.0, label);
      ASSERT_TRUE(engine::RestoreLoras(unet->get(), nullptr, *patch).ok());
    }
  }
}

}  // namespace
}  // namespace atelier
