// WebUI's prompt styles: styles.csv parsing (quotes, "" escapes, newlines in quotes, a BOM, several files) and
// apply_styles_to_prompt's arithmetic ({prompt} placeholder, ", " join skipping blanks, several styles in order).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "engine/text/prompt_styles.h"
#include "test_support.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

TEST(PromptStylesTest, CsvAndWebUisMerge) {
  testing::TempDir dir;
  {
    std::ofstream(dir.path() / "styles.csv", std::ios::binary)
        << "\xEF\xBB\xBFname,prompt,negative_prompt\n"
           "anime,\"masterpiece, best quality, {prompt}\",\"lowres, bad anatomy\"\n"
           "\"quoted \"\"name\"\"\",\"line one\nline two\",\n"
           "tail,\"soft light\",\"\"\n";
    std::ofstream(dir.path() / "more.csv") << "name,prompt,negative_prompt\nanime,IGNORED,IGNORED\nextra,x,y\n";
  }
  auto styles = engine::PromptStyles::Load({dir.path() / "styles.csv", dir.path() / "more.csv", dir.path() / "missing.csv"});
  ASSERT_TRUE(styles.ok()) << styles.status();
  ASSERT_EQ(styles->styles().size(), 4u);
  EXPECT_EQ(styles->Find("quoted \"name\"")->prompt, "line one\nline two");
  EXPECT_EQ(styles->Find("anime")->prompt, "masterpiece, best quality, {prompt}");  // the first file wins

  std::string prompt = "1girl, smile", negative = "";
  ASSERT_TRUE(styles->Apply({"anime", "tail"}, prompt, negative).ok());
  EXPECT_EQ(prompt, "masterpiece, best quality, 1girl, smile, soft light");
  EXPECT_EQ(negative, "lowres, bad anatomy");
  EXPECT_EQ(engine::MergeStylePrompt("  ", " a cat "), "a cat");
  EXPECT_EQ(engine::MergeStylePrompt("style", ""), "style");

  auto missing = styles->Apply({"nope"}, prompt, negative);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("\"anime\", \"quoted \"name\"\", \"tail\", \"extra\""));

  std::ofstream(dir.path() / "bad.csv") << "name,prompt\nx,\"never closed\n";
  EXPECT_EQ(engine::PromptStyles::Load({dir.path() / "bad.csv"}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atelier
