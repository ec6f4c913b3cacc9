// The CLIP text encoder: parameter names and shapes of the full-size model equal the SD 1.5 release's, and the
// tiny model reproduces the clip-text-tiny goldens (hidden states, Clip skip 2/3, WebUI chunk conditioning with
// emphasis "Original", incl. a batch of two).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>

#include "engine/models/clip_text_model.h"
#include "engine/text/text_conditioning.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/io/tensor_file.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using testing::AllClose;

constexpr char kPrefix[] = "cond_stage_model.transformer.";

TEST(ClipTextModelTest, FullSizeModelMatchesTheSd15ManifestExactly) {
  const testing::Shapes expected = testing::ManifestShapes("sd15-ldm.json", kPrefix);
  ASSERT_EQ(expected.size(), 197u);
  std::map<std::string, std::vector<std::int64_t>> got;
  for (const auto& [name, shape] : engine::ClipTextModel::ParameterShapes(engine::ClipTextConfig())) got[name] = shape;
  EXPECT_EQ(got, expected);
}

engine::ClipTextConfig ConfigOf(const testing::FixtureCase& c) {
  const auto& hf = c.json["config"]["hf_clip_text_config"];
  engine::ClipTextConfig config;
  config.vocab_size = hf["vocab_size"];
  config.max_position_embeddings = hf["max_position_embeddings"];
  config.hidden_size = hf["hidden_size"];
  config.intermediate_size = hf["intermediate_size"];
  config.num_hidden_layers = hf["num_hidden_layers"];
  config.num_attention_heads = hf["num_attention_heads"];
  config.layer_norm_eps = hf["layer_norm_eps"];
  return config;
}

std::unique_ptr<engine::ClipTextModel> TinyModel(const testing::FixtureCase& c) {
  auto set = engine::ReadTensorSet(testing::WeightsFile(c));
  EXPECT_TRUE(set.ok()) << set.status();
  if (!set.ok()) return nullptr;
  engine::WeightMap weights;
  for (const auto& [name, t] : set->tensors) {
    if (name.rfind(kPrefix, 0) == 0) weights[name.substr(sizeof(kPrefix) - 1)] = t.to(at::kFloat);  // F16 -> F32
  }
  auto model = engine::ClipTextModel::Create(ConfigOf(c), weights);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

TEST(ClipTextModelTest, TinyModelReproducesTheGoldens) {
  for (const auto& c : testing::CasesOf("clip-text-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto model = TinyModel(c);
    ASSERT_NE(model, nullptr);
    const at::Tensor ids = c.io.at("input_ids");
    const auto states = model->HiddenStates(ids);
    const at::Tensor expected_states = c.io.at("hidden_states");
    ASSERT_EQ(static_cast<int64_t>(states.size()), expected_states.size(0));
    for (std::size_t i = 0; i < states.size(); ++i) {
      EXPECT_TRUE(AllClose(states[i], expected_states[static_cast<int64_t>(i)], c.atol, c.rtol)) << "hidden state " << i;
    }
    EXPECT_TRUE(AllClose(model->Encode(ids, 1), c.io.at("last_hidden_state"), c.atol, c.rtol)) << "last hidden state";
    // Every Clip skip the case has goldens for (2 and 3 in the public case).
    const std::vector<int> skips = testing::IoKeyNumbers(c, "clip_skip");
    EXPECT_FALSE(skips.empty()) << "no clip_skip<k> tensor in " << c.dir / "io.safetensors";
    for (const int skip : skips) {
      EXPECT_TRUE(AllClose(model->Encode(ids, skip), c.io.at("clip_skip" + std::to_string(skip)), c.atol, c.rtol))
          << "clip skip " << skip;
    }
    EXPECT_TRUE(AllClose(model->FinalLayerNorm(states.back()), c.io.at("last_hidden_state"), c.atol, c.rtol));
  }
}

// WebUI's conditioning from the chunks given in the fixture: emphasis "Original" over each chunk batch.
TEST(ClipTextModelTest, ChunkConditioningWithEmphasisMatchesWebUi) {
  for (const auto& c : testing::CasesOf("clip-text-tiny")) {
    auto model = TinyModel(c);
    ASSERT_NE(model, nullptr);
    const auto tokenizer = engine::ClipTokenizer::Load(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip");
    ASSERT_TRUE(tokenizer.ok());
    engine::TextConditioner conditioner(**tokenizer, *model, nullptr);
    int checked = 0, recorded = 0;
    for (const auto& [key, t] : c.io) {
      if (key.rfind("cond.", 0) == 0 && key.find(".clip_skip") != std::string::npos) ++recorded;
    }
    for (const auto& prompt : c.values["prompts"]) {
      const std::string name = prompt["name"];
      const at::Tensor tokens = c.io.at("cond." + name + ".tokens");
      const at::Tensor multipliers = c.io.at("cond." + name + ".multipliers");
      engine::TokenizedPrompt chunks;
      for (int64_t i = 0; i < tokens.size(0); ++i) {
        engine::PromptChunk chunk;
        for (int64_t j = 0; j < tokens.size(1); ++j) {
          chunk.tokens.push_back(static_cast<int>(tokens[i][j].item<int64_t>()));
          chunk.multipliers.push_back(multipliers[i][j].item<float>());
        }
        chunks.chunks.push_back(chunk);
      }
      const std::vector<int> skips = testing::IoKeyNumbers(c, "cond." + name + ".clip_skip");
      EXPECT_FALSE(skips.empty()) << "no cond." << name << ".clip_skip<k> tensor in " << c.dir;
      for (const int skip : skips) {
        const std::string key = "cond." + name + ".clip_skip" + std::to_string(skip);
        EXPECT_TRUE(AllClose(conditioner.EncodeChunks({chunks}, skip, engine::Emphasis::kOriginal), c.io.at(key),
                             c.atol, c.rtol))
            << key;
        ++checked;
      }
    }
    // Every prompt conditioning the case records (4 prompts x Clip skip 1 and 2 in the public case).
    EXPECT_EQ(checked, recorded);
    EXPECT_GT(checked, 0) << "no cond.<name>.clip_skip<k> tensor in " << c.dir;
  }
}

TEST(ClipTextModelTest, MissingOrMisShapedWeightsAreNamed) {
  for (const auto& c : testing::CasesOf("clip-text-tiny")) {
    auto set = engine::ReadTensorSet(testing::WeightsFile(c));
    ASSERT_TRUE(set.ok()) << set.status();
    engine::WeightMap weights;
    for (const auto& [name, t] : set->tensors) {
      if (name.rfind(kPrefix, 0) == 0) weights[name.substr(sizeof(kPrefix) - 1)] = t;
    }
    engine::WeightMap missing = weights;
    missing.erase("text_model.final_layer_norm.weight");
    auto model = engine::ClipTextModel::Create(ConfigOf(c), missing);
    EXPECT_THAT(std::string(model.status().message()),
                ::testing::HasSubstr("cond_stage_model.transformer.text_model.final_layer_norm.weight is missing"));
    engine::ClipTextConfig wider = ConfigOf(c);
    wider.hidden_size *= 2;
    wider.num_attention_heads *= 2;
    model = engine::ClipTextModel::Create(wider, weights);
    EXPECT_THAT(std::string(model.status().message()),
                ::testing::HasSubstr("expected [" + std::to_string(wider.vocab_size) + ", " +
                                     std::to_string(wider.hidden_size) + "]"));
    // The older naming (no text_model.) loads the same model.
    engine::WeightMap old_names;
    for (const auto& [name, t] : weights) old_names[name.substr(std::string("text_model.").size())] = t;
    auto renamed = engine::ClipTextModel::Create(ConfigOf(c), old_names);
    ASSERT_TRUE(renamed.ok()) << renamed.status();
    // Position ids stored as floats just below the integers are truncated, as WebUI does.
    engine::WeightMap float_positions = weights;
    const int64_t positions = ConfigOf(c).max_position_embeddings;
    float_positions["text_model.embeddings.position_ids"] =
        at::arange(positions, at::kFloat).unsqueeze(0) -
        at::full({1, positions}, 0.0001f) * (at::arange(positions) == positions - 1).to(at::kFloat);
    auto shifted = engine::ClipTextModel::Create(ConfigOf(c), float_positions);
    ASSERT_TRUE(shifted.ok());
    const at::Tensor ids = c.io.at("input_ids");
    EXPECT_FALSE(shifted.value()->Encode(ids, 1).equal(renamed.value()->Encode(ids, 1)));
  }
}

}  // namespace
}  // namespace atelier
