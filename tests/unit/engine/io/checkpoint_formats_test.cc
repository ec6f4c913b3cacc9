// PyTorch pickle checkpoints: every variant of the ckpt-formats fixture gives exactly the expected tensors
// (names, dtypes, shapes, values), and the malicious one is refused without running anything.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/io/tensor_file.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct FormatCase {
  fs::path dir;
  std::string file;
  std::string description;
};

// Cases whose case.json lists pickle files ("files") and an expected io.safetensors.
std::vector<FormatCase> DiscoverCases() {
  std::vector<FormatCase> cases;
  const fs::path root = testing::FixturesDir();
  if (!fs::is_directory(root)) return cases;
  for (const auto& entry : fs::directory_iterator(root)) {
    const fs::path json_path = entry.path() / "case.json";
    if (!fs::exists(json_path) || !fs::exists(entry.path() / "io.safetensors")) continue;
    const auto json = nlohmann::json::parse(std::ifstream(json_path), nullptr, false);
    if (json.is_discarded() || !json.contains("files") || !json["files"].is_object()) continue;
    for (const auto& [file, description] : json["files"].items()) {
      cases.push_back({entry.path(), file, description.is_string() ? description.get<std::string>() : ""});
    }
  }
  return cases;
}

bool IsMalicious(const FormatCase& c) { return c.description.rfind("malicious", 0) == 0; }

TEST(CheckpointFormatsTest, EveryVariantGivesTheExpectedTensorsBitExact) {
  const auto cases = DiscoverCases();
  ASSERT_FALSE(cases.empty()) << "no checkpoint-format cases (a case.json listing \"files\") under "
                               << testing::FixturesDir() << " (set ATELIER_FIXTURES)";
  int checked = 0, listed = 0;
  for (const FormatCase& c : cases) listed += IsMalicious(c) ? 0 : 1;
  for (const FormatCase& c : cases) {
    if (IsMalicious(c)) continue;
    SCOPED_TRACE(c.dir.filename().string() + "/" + c.file);
    auto expected = engine::ReadTensorSet(c.dir / "io.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    auto got = engine::ReadTensorSet(c.dir / c.file);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_NE(got->format, "safetensors");
    ASSERT_EQ(got->tensors.size(), expected->tensors.size());
    std::map<std::string, at::Tensor> by_name(got->tensors.begin(), got->tensors.end());
    for (const auto& [name, want] : expected->tensors) {
      SCOPED_TRACE(name);
      ASSERT_EQ(by_name.count(name), 1u);
      const at::Tensor& have = by_name[name];
      EXPECT_EQ(have.scalar_type(), want.scalar_type());
      EXPECT_EQ(have.sizes(), want.sizes());
      EXPECT_TRUE(have.is_contiguous());
      EXPECT_TRUE(have.equal(want));  // atol = rtol = 0
    }
    // The index (no storages read) agrees with the data.
    auto index = engine::ReadTensorIndex(c.dir / c.file);
    ASSERT_TRUE(index.ok()) << index.status();
    ASSERT_EQ(index->tensors.size(), expected->tensors.size());
    for (const auto& info : index->tensors) {
      ASSERT_EQ(by_name.count(info.name), 1u) << info.name;
      EXPECT_EQ(info.shape, by_name[info.name].sizes().vec());
    }
    ++checked;
  }
  EXPECT_EQ(checked, listed);  // every readable file the cases list (4 in the public case)
  EXPECT_GT(checked, 0) << "no checkpoint file but malicious ones listed under " << testing::FixturesDir();
}

TEST(CheckpointFormatsTest, MaliciousPickleIsRefusedAndNothingRuns) {
  const fs::path marker = "/tmp/atelier-pwned";
  fs::remove(marker);
  int checked = 0;
  for (const FormatCase& c : DiscoverCases()) {
    if (!IsMalicious(c)) continue;
    SCOPED_TRACE(c.file);
    for (int pass = 0; pass < 2; ++pass) {
      const absl::Status status = pass == 0 ? engine::ReadTensorSet(c.dir / c.file).status()
                                            : engine::ReadTensorIndex(c.dir / c.file).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
      EXPECT_THAT(std::string(status.message()), HasSubstr("posix.system"));
      EXPECT_THAT(std::string(status.message()), HasSubstr("nothing was run"));
    }
    ++checked;
  }
  EXPECT_GE(checked, 1) << "no malicious checkpoint (a \"files\" entry described as malicious) under "
                        << testing::FixturesDir();
  EXPECT_FALSE(fs::exists(marker));
}

}  // namespace
}  // namespace atelier
