// CLIP tokenisation against the clip-tokenizer fixture: the ids of Hugging Face's CLIPTokenizer (what WebUI uses)
// for every prompt, and the 77-token SD form, exact.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/io/tensor_file.h"
#include "engine/text/text_cleanup.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;

const engine::ClipTokenizer& Tokenizer() {
  static const auto tokenizer = [] {
    auto t = engine::ClipTokenizer::Load(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip");
    if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
    return *std::move(t);
  }();
  return *tokenizer;
}

TEST(ClipTokenizerTest, MatchesTheReferenceOnEveryPrompt) {
  for (const auto& c : testing::CasesOf("clip-tokenizer")) {
    SCOPED_TRACE(c.dir.string());
    const auto& values = c.values;
    const auto& config = c.json["config"];
    // The SD form the case records: start token, at most context_length - 2 ids, end token, padding.
    const int64_t context_length = config["context_length"].get<int64_t>();
    const std::int64_t start = config["start_token"].get<std::int64_t>();
    const std::int64_t end = config["end_token"].get<std::int64_t>();
    const std::int64_t pad = config.value("pad_token_sd1", end);
    EXPECT_EQ(engine::ClipTokenizer::kStartToken, start);
    EXPECT_EQ(engine::ClipTokenizer::kEndToken, end);
    const at::Tensor sd_ids_77 = c.io.count("sd_ids_77") ? c.io.at("sd_ids_77") : at::Tensor();
    if (sd_ids_77.defined()) {
      ASSERT_EQ(sd_ids_77.size(0), static_cast<int64_t>(values["prompts"].size()));
      ASSERT_EQ(sd_ids_77.size(1), context_length);
    }
    int index = 0, ftfy_failures = 0, bpe_failures = 0;
    for (const auto& prompt : values["prompts"]) {
      const std::string text = prompt["text"].get<std::string>();
      const auto want = prompt["hf_ids"].get<std::vector<int>>();
      const std::vector<int> got = Tokenizer().Encode(text);
      if (got != want) {
        (prompt.value("ftfy_changes_text", false) ? ftfy_failures : bpe_failures)++;
        ADD_FAILURE() << "prompt " << index << " " << nlohmann::json(text).dump() << "\n  want "
                      << absl::StrJoin(want, " ") << "\n  got  " << absl::StrJoin(got, " ");
      }
      // The one-window SD form: start, the first context_length - 2 (75) ids, end, then end-token padding.
      std::vector<std::int64_t> padded = {start};
      for (std::size_t i = 0; i < got.size() && static_cast<int64_t>(i) < context_length - 2; ++i) {
        padded.push_back(got[i]);
      }
      padded.push_back(end);
      padded.resize(static_cast<std::size_t>(context_length), pad);
      if (sd_ids_77.defined()) {
        const at::Tensor row = sd_ids_77[index].contiguous();
        const std::int64_t* ids = row.data_ptr<std::int64_t>();
        EXPECT_EQ(std::vector<std::int64_t>(ids, ids + context_length), padded) << "prompt " << index;
      }
      ++index;
    }
    EXPECT_GT(index, 0) << "no prompt in " << c.dir / "values.json";  // 50 or more in the public case
    EXPECT_EQ(ftfy_failures, 0) << "text-repair (ftfy) differences";
    EXPECT_EQ(bpe_failures, 0) << "tokenisation differences";
  }
}

TEST(ClipTokenizerTest, TokenStringsAndSpecialTokens) {
  EXPECT_EQ(Tokenizer().vocab_size(), 49408);
  EXPECT_EQ(Tokenizer().TokenString(2368), "cat</w>");
  EXPECT_EQ(Tokenizer().TokenString(267), ",</w>");
  EXPECT_EQ(Tokenizer().Encode("a <|endoftext|> b"), (std::vector<int>{320, 49407, 321}));
  EXPECT_TRUE(Tokenizer().Encode("").empty());
  EXPECT_TRUE(Tokenizer().Encode(" \t\n ").empty());
}

TEST(ClipTokenizerTest, InvalidUtf8IsNamedByOffset) {
  EXPECT_TRUE(engine::ValidateUtf8("caf\xc3\xa9").ok());
  const absl::Status bad = engine::ValidateUtf8("abc\xff" "def");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), ::testing::HasSubstr("byte offset 3"));
  EXPECT_THAT(std::string(engine::ValidateUtf8("ab\xe2\x82").message()), ::testing::HasSubstr("byte offset 2"));
  EXPECT_FALSE(engine::ValidateUtf8("\xed\xa0\x80").ok());  // a surrogate
  EXPECT_FALSE(engine::ValidateUtf8("\xc0\xaf").ok());      // overlong
  // The tokenizer itself never fails: invalid bytes read as U+FFFD.
  EXPECT_FALSE(Tokenizer().Encode("a\xff" "b").empty());
}

TEST(ClipTokenizerTest, LongPromptsStayFast) {
  std::string prompt;
  for (int i = 0; i < 400; ++i) prompt += "masterpiece, best quality, 1girl, ";
  const std::vector<int> ids = Tokenizer().Encode(prompt);
  EXPECT_EQ(ids.size(), 400u * 8u);
}

}  // namespace
}  // namespace atelier
