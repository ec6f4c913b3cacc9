// Prompt to conditioning: WebUI's 75-token chunking on every clip-chunking case (tokens, multipliers, token
// counts), the conditioning of the clip-text-tiny prompts from their text, textual-inversion embeddings, prompt
// schedules, AND, and bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <zip.h>

#include <chrono>

#include "absl/strings/str_join.h"
#include "engine/models/clip_text_model.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/io/tensor_file.h"
#include "engine/models/model_manager.h"
#include "engine/io/safetensors_writer.h"
#include "engine/text/text_conditioning.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::AllClose;

const engine::ClipTokenizer& Tokenizer() {
  static const auto tokenizer = *engine::ClipTokenizer::Load(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip");
  return *tokenizer;
}

TEST(PromptChunkerTest, EveryChunkingCaseMatchesWebUi) {
  for (const auto& c : testing::CasesOf("clip-chunking")) {
    SCOPED_TRACE(c.dir.string());
    int index = 0;
    for (const auto& item : c.values["cases"]) {
      const std::string prompt = item["prompt"];
      SCOPED_TRACE(item["name"].get<std::string>() + ": " + prompt.substr(0, 80));
      engine::ChunkingOptions options;
      options.comma_padding_backtrack = item["opts"].value("comma_padding_backtrack", 20);
      auto emphasis = engine::ParseEmphasis(item["opts"].value("emphasis", "Original"));
      ASSERT_TRUE(emphasis.ok());
      options.emphasis = *emphasis;
      auto got = engine::TokenizeLine(prompt, options, Tokenizer());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->token_count, item["token_count"].get<int>());
      ASSERT_EQ(got->chunks.size(), item["chunks"].size());
      for (std::size_t i = 0; i < got->chunks.size(); ++i) {
        const auto want_tokens = item["chunks"][i]["tokens"].get<std::vector<int>>();
        const auto want_multipliers = item["chunks"][i]["multipliers"].get<std::vector<double>>();
        EXPECT_EQ(got->chunks[i].tokens, want_tokens) << "chunk " << i << "\n got  " << absl::StrJoin(got->chunks[i].tokens, " ");
        EXPECT_EQ(got->chunks[i].multipliers, want_multipliers) << "chunk " << i;
      }
      // io.safetensors holds the same as tensors, keyed by the zero-padded case index.
      const std::string key = (index < 10 ? "0" : "") + std::to_string(index);
      const at::Tensor tokens = c.io.at(key + ".tokens");
      const at::Tensor multipliers = c.io.at(key + ".multipliers");
      ASSERT_EQ(tokens.size(0), static_cast<int64_t>(got->chunks.size()));
      for (std::size_t i = 0; i < got->chunks.size(); ++i) {
        ASSERT_EQ(tokens.size(1), static_cast<int64_t>(got->chunks[i].tokens.size())) << "chunk " << i;
        for (int j = 0; j < tokens.size(1); ++j) {
          EXPECT_EQ(tokens[static_cast<int64_t>(i)][j].item<int64_t>(), got->chunks[i].tokens[static_cast<std::size_t>(j)]);
          EXPECT_EQ(multipliers[static_cast<int64_t>(i)][j].item<float>(),
                    static_cast<float>(got->chunks[i].multipliers[static_cast<std::size_t>(j)]));
        }
      }
      ++index;
    }
    // Every prompt the case records in io.safetensors ("NN.tokens"; 20 in the public case).
    int recorded = 0;
    for (const auto& [key, t] : c.io) {
      if (key.size() > 7 && key.compare(key.size() - 7, 7, ".tokens") == 0) ++recorded;
    }
    EXPECT_EQ(index, recorded);
    EXPECT_GT(index, 0) << "no prompt in " << c.dir / "values.json";
  }
}

// The Clip skip values k a case records conditioning goldens for under `prefix` + "clip_skip" + k.
std::vector<int> ClipSkips(const testing::FixtureCase& c, const std::string& prefix) {
  const std::vector<int> skips = testing::IoKeyNumbers(c, prefix + "clip_skip");
  EXPECT_FALSE(skips.empty()) << "no " << prefix << "clip_skip<k> tensor in " << c.dir / "io.safetensors";
  return skips;
}

class ConditioningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto cases = testing::CasesOf("clip-text-tiny");
    ASSERT_FALSE(cases.empty());
    LoadCase(cases[0]);
  }

  // The case's tiny text encoder and a conditioner over it.
  void LoadCase(const testing::FixtureCase& c) {
    case_ = c;
    conditioner_.reset();
    model_.reset();
    auto set = engine::ReadTensorSet(testing::WeightsFile(case_));
    ASSERT_TRUE(set.ok()) << set.status();
    constexpr char kPrefix[] = "cond_stage_model.transformer.";
    engine::WeightMap weights;
    for (const auto& [name, t] : set->tensors) {
      if (name.rfind(kPrefix, 0) == 0) weights[name.substr(sizeof(kPrefix) - 1)] = t.to(at::kFloat);
    }
    const auto& hf = case_.json["config"]["hf_clip_text_config"];
    config_.hidden_size = hf["hidden_size"];
    config_.intermediate_size = hf["intermediate_size"];
    config_.num_hidden_layers = hf["num_hidden_layers"];
    config_.num_attention_heads = hf["num_attention_heads"];
    auto model = engine::ClipTextModel::Create(config_, weights);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    conditioner_ = std::make_unique<engine::TextConditioner>(Tokenizer(), *model_, &embeddings_);
  }

  testing::FixtureCase case_;
  engine::ClipTextConfig config_;
  std::unique_ptr<engine::ClipTextModel> model_;
  engine::EmbeddingDatabase embeddings_;
  std::unique_ptr<engine::TextConditioner> conditioner_;
};

// Every clip-text-tiny case, with every Clip skip it records.
TEST_F(ConditioningTest, PromptsGiveWebUisConditioning) {
  for (const auto& c : testing::CasesOf("clip-text-tiny")) {
    SCOPED_TRACE(c.dir.string());
    LoadCase(c);
    if (HasFatalFailure()) return;
    for (const auto& prompt : case_.values["prompts"]) {
      const std::string name = prompt["name"];
      for (const int skip : ClipSkips(case_, "cond." + name + ".")) {
        engine::ConditioningOptions options;
        options.clip_skip = skip;
        auto cond = conditioner_->Encode({prompt["prompt"].get<std::string>()}, options);
        ASSERT_TRUE(cond.ok()) << cond.status();
        EXPECT_TRUE(AllClose(*cond, case_.io.at("cond." + name + ".clip_skip" + std::to_string(skip)), case_.atol,
                             case_.rtol))
            << name << " clip skip " << skip;
      }
    }
    // Two prompts in ONE batch: the emphasis mean spans the batch, so this differs from encoding each alone.
    for (const int skip : ClipSkips(case_, "cond_batch2.")) {
      engine::ConditioningOptions options;
      options.clip_skip = skip;
      auto batch = conditioner_->Encode(case_.values["batch2"].get<std::vector<std::string>>(), options);
      ASSERT_TRUE(batch.ok());
      EXPECT_TRUE(AllClose(*batch, case_.io.at("cond_batch2.clip_skip" + std::to_string(skip)), case_.atol,
                           case_.rtol))
          << "batch2 clip skip " << skip;
    }
  }
}

TEST_F(ConditioningTest, EmbeddingVectorsReplaceTheirWord) {
  // An embedding whose two vectors are the token embeddings of "a cat" conditions like the words "a cat".
  const at::Tensor table = [&] {
    auto set = engine::ReadTensorSet(testing::WeightsFile(case_));
    EXPECT_TRUE(set.ok()) << set.status();
    if (!set.ok()) return at::Tensor();
    for (const auto& [name, t] : set->tensors) {
      if (name.find("token_embedding") != std::string::npos) return t.to(at::kFloat);
    }
    return at::Tensor();
  }();
  ASSERT_TRUE(table.defined());
  ASSERT_TRUE(embeddings_.Add("mycat", "mycat.pt", table.index_select(0, at::tensor({320, 2368})), Tokenizer()).ok());
  engine::ConditioningOptions options;
  auto tokenized = conditioner_->Tokenize("photo of (mycat:1.2) on a chair", options);
  ASSERT_TRUE(tokenized.ok());
  ASSERT_EQ(tokenized->chunks[0].fixes.size(), 1u);
  EXPECT_EQ(tokenized->chunks[0].fixes[0].offset, 2);
  EXPECT_EQ(tokenized->token_count, 7);  // photo of [2 vectors] on a chair
  auto with_embedding = conditioner_->Encode({"photo of (mycat:1.2) on a chair"}, options);
  auto with_words = conditioner_->Encode({"photo of (a cat:1.2) on a chair"}, options);
  ASSERT_TRUE(with_embedding.ok() && with_words.ok());
  EXPECT_TRUE(AllClose(*with_embedding, *with_words, 1e-5, 1e-5));
}

TEST_F(ConditioningTest, SchedulesAndAndAreConditionedOnce) {
  engine::ConditioningOptions options;
  auto learned = engine::GetLearnedConditioning(*conditioner_, {"a [cat:dog:10] photo", "a [cat:dog:10] photo", "x"}, 20,
                                                options);
  ASSERT_TRUE(learned.ok()) << learned.status();
  ASSERT_EQ(learned->size(), 3u);
  ASSERT_EQ((*learned)[0].size(), 2u);
  EXPECT_EQ((*learned)[0][0].end_at_step, 10);
  EXPECT_EQ((*learned)[0][1].end_at_step, 20);
  // The same prompt twice shares its tensors (computed once).
  EXPECT_EQ((*learned)[0][0].cond.data_ptr(), (*learned)[1][0].cond.data_ptr());
  // The schedule's texts are encoded in one batch, as WebUI does.
  auto both = conditioner_->Encode({"a cat photo", "a dog photo"}, options);
  ASSERT_TRUE(both.ok());
  EXPECT_TRUE((*learned)[0][1].cond.equal((*both)[1]));
  EXPECT_TRUE(engine::CondAtStep((*learned)[0], 10).equal((*both)[0]));
  EXPECT_TRUE(engine::CondAtStep((*learned)[0], 11).equal((*both)[1]));

  // AND parts keep their leading whitespace and lose the trailing one, as in WebUI: "a dog " is "a dog".
  auto multi = engine::GetMulticondLearnedConditioning(*conditioner_, {"a dog AND a cat :0.5", "a dog"}, 20, options);
  ASSERT_TRUE(multi.ok()) << multi.status();
  ASSERT_EQ(multi->batch.size(), 2u);
  ASSERT_EQ(multi->batch[0].size(), 2u);
  EXPECT_DOUBLE_EQ(multi->batch[0][0].weight, 1.0);
  EXPECT_DOUBLE_EQ(multi->batch[0][1].weight, 0.5);
  EXPECT_EQ(multi->batch[1][0].schedule, multi->batch[0][0].schedule);  // "a dog" conditioned once
  EXPECT_EQ(multi->schedules.size(), 2u);
}

TEST_F(ConditioningTest, BadInputGetsClearErrors) {
  engine::ConditioningOptions options;
  auto bad_utf8 = conditioner_->Encode({"a cat \xff\xfe"}, options);
  EXPECT_EQ(bad_utf8.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_utf8.status().message()), HasSubstr("byte offset 6"));
  std::string huge;
  for (int i = 0; i < 12000; ++i) huge += "cat ";
  options.max_tokens = 10000;
  const auto start = std::chrono::steady_clock::now();
  auto too_long = conditioner_->Encode({huge}, options);
  EXPECT_THAT(std::string(too_long.status().message()), HasSubstr("prompt has 12000 tokens; the limit is 10000"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // Lenient like WebUI: unbalanced brackets and deep nesting condition fine; NUL bytes are just characters.
  for (const std::string& odd : {std::string("((((a cat"), std::string(1000, '(') + "x", std::string("a \0 b", 5),
                                 std::string("a ] ) : cat")}) {
    EXPECT_TRUE(conditioner_->Encode({odd}, engine::ConditioningOptions()).ok()) << odd.substr(0, 20);
  }
}

}  // namespace
}  // namespace atelier

namespace atelier {
namespace {

// End to end from a checkpoint file: load tiny-sd through the model manager (its yaml gives the text encoder's
// shape), build the encoder from the loaded weights, and condition the case's prompts like WebUI.
TEST(CheckpointConditioningTest, TinySdCheckpointConditionsLikeWebUi) {
  for (const auto& c : testing::CasesOf("tiny-sd")) {
    SCOPED_TRACE(c.dir.string());
    testing::TempDir root;
    testing::InstallTinyCheckpoint(testing::WeightsFile(c), root.path() / "models");
    auto folders = engine::ModelFolders::Open(root.path());
    ASSERT_TRUE(folders.ok());
    engine::ModelManager manager(&*folders, "", engine::LoadOptions());
    auto weights = manager.Load("tiny", "None");
    ASSERT_TRUE(weights.ok()) << weights.status();
    auto model = engine::ClipTextModel::Create((*weights)->config.clip, (*weights)->text_encoder);
    ASSERT_TRUE(model.ok()) << model.status();
    engine::TextConditioner conditioner(Tokenizer(), **model, nullptr);
    const auto prompts = c.json["values"]["prompts"].get<std::vector<std::string>>();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      // Every Clip skip the case records for the prompt (1 and 2 in the public case).
      for (const int skip : ClipSkips(c, "cond" + std::to_string(i) + ".")) {
        engine::ConditioningOptions options;
        options.clip_skip = skip;
        auto cond = conditioner.Encode({prompts[i]}, options);
        ASSERT_TRUE(cond.ok()) << cond.status();
        const std::string key = "cond" + std::to_string(i) + ".clip_skip" + std::to_string(skip);
        EXPECT_TRUE(AllClose(*cond, c.io.at(key), c.atol, c.rtol)) << key;
      }
    }
  }
}

// Embedding files in the embeddings/ folder: .pt (string_to_param, read by the pickle walker), .safetensors
// (emb_params); files of another width are skipped with the reason.
TEST(EmbeddingDatabaseTest, LoadsEmbeddingsFolder) {
  testing::TempDir root;
  const fs::path dir = root.path() / "embeddings";
  fs::create_directories(dir / "sub");
  ASSERT_TRUE(engine::WriteSafetensors(dir / "goodvibes.safetensors", {{"emb_params", at::rand({3, 32})}}, {}).ok());
  ASSERT_TRUE(engine::WriteSafetensors(dir / "sub/wide.safetensors", {{"emb_params", at::rand({2, 768})}}, {}).ok());
  ASSERT_TRUE(engine::WriteSafetensors(dir / "notanembedding.safetensors", {{"a", at::rand({2})}, {"b", at::rand({2})}}, {}).ok());
  // A WebUI .pt: {"string_to_token": {"*": 265}, "string_to_param": {"*": tensor[2, 32]}, "name": "badhands"},
  // written as a torch zip by hand (storage "0" of 64 floats).
  {
    auto str = [](const std::string& s) {
      std::string out = "X";
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((s.size() >> (8 * i)) & 0xFF));
      return out + s;
    };
    std::string p = "\x80\x02}" + str("string_to_token") + "}" + str("*") + "M\x09\x01ss";
    p += str("string_to_param") + "}" + str("*") + "ctorch._utils\n_rebuild_tensor_v2\n(";
    p += "(" + str("storage") + "ctorch\nFloatStorage\n" + str("0") + str("cpu") + "K\x40tQ";
    p += std::string("K\x00", 2) + "K\x02K\x20\x86K\x20K\x01\x86\x89" + "ccollections\nOrderedDict\n)RtRs";
    p += "s" + str("name") + str("badhands") + "s.";
    int error = 0;
    zip_t* z = zip_open((dir / "badhands.pt").c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
    ASSERT_NE(z, nullptr);
    std::string data(64 * 4, '\0');
    zip_file_add(z, "badhands/data.pkl", zip_source_buffer(z, p.data(), p.size(), 0), 0);
    zip_file_add(z, "badhands/data/0", zip_source_buffer(z, data.data(), data.size(), 0), 0);
    ASSERT_EQ(zip_close(z), 0);
  }
  auto folders = engine::ModelFolders::Open(root.path());
  ASSERT_TRUE(folders.ok());
  const auto db = engine::EmbeddingDatabase::Load(*folders, Tokenizer(), 32);
  std::map<std::string, const engine::TextualInversion*> by_name;
  for (const auto& e : db.loaded()) by_name[e->name] = e.get();
  ASSERT_EQ(by_name.size(), 2u);
  EXPECT_EQ(by_name["goodvibes"]->vectors.size(0), 3);
  EXPECT_EQ(by_name["badhands"]->vectors.size(0), 2);
  EXPECT_EQ(by_name["badhands"]->file, "badhands.pt");
  ASSERT_EQ(db.skipped().size(), 2u);
  std::map<std::string, std::string> skipped;
  for (const auto& s : db.skipped()) skipped[s.file] = s.reason;
  EXPECT_THAT(skipped["sub/wide.safetensors"], HasSubstr("vectors of width 768, the text encoder needs 32"));
  EXPECT_THAT(skipped["notanembedding.safetensors"], HasSubstr("not a textual-inversion embedding"));
  // Found in a prompt by its name's tokens, the longest name first.
  std::size_t length = 0;
  const auto ids = Tokenizer().Encode("a goodvibes photo");
  const auto* found = db.FindAt(ids, 1, &length);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->name, "goodvibes");
  EXPECT_EQ(length, Tokenizer().Encode("goodvibes").size());
  EXPECT_EQ(db.FindAt(ids, 0, &length), nullptr);
}

}  // namespace
}  // namespace atelier
