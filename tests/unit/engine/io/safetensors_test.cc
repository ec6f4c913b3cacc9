// The safetensors reader: every fixture file (written by the reference Python implementation) parses and maps;
// malformed files are refused with messages naming the file, the tensor, and expected vs actual values.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/io/safetensors.h"
#include "engine/io/tensor_view.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string File(const std::string& header, const std::string& buffer) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + buffer;
}

absl::Status ParseStatus(const std::string& bytes) {
  return engine::ParseSafetensors(bytes, "bad.safetensors").status();
}

TEST(SafetensorsTest, EveryFixtureFileParsesAndMaps) {
  const fs::path root = testing::FixturesDir();
  ASSERT_TRUE(fs::is_directory(root)) << "fixtures not found at " << root << " (set ATELIER_FIXTURES)";
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.path().extension() != ".safetensors") continue;
    SCOPED_TRACE(entry.path().string());
    auto file = engine::SafetensorsFile::Open(entry.path());
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_FALSE((*file)->tensors().empty());
    std::uint64_t covered = 0;
    for (const engine::TensorEntry& t : (*file)->tensors()) {
      EXPECT_EQ(t.begin, covered) << t.name;  // file order, no gaps
      covered = t.end;
      EXPECT_EQ((*file)->Find(t.name), &t);
      at::Tensor view = engine::TensorView(*file, t);
      EXPECT_EQ(view.sizes().vec(), t.shape) << t.name;
      EXPECT_EQ(static_cast<std::uint64_t>(view.numel()) * engine::DTypeSize(t.dtype), t.end - t.begin);
      if (view.is_floating_point() && view.numel() > 0) {
        EXPECT_TRUE(view.to(at::kDouble).isfinite().all().item<bool>()) << t.name;
      }
    }
    ++files;
  }
  // The case folders' own io.safetensors and weights.safetensors are among them (over 10 in the public set).
  int case_files = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!fs::exists(entry.path() / "case.json")) continue;
    for (const char* name : {"io.safetensors", "weights.safetensors"}) {
      if (fs::exists(entry.path() / name)) ++case_files;
    }
  }
  EXPECT_GT(case_files, 0) << "no case folder with an io.safetensors or weights.safetensors under " << root;
  EXPECT_GE(files, case_files);
}

TEST(SafetensorsTest, ViewsShareTheMappingAndOutliveTheFile) {
  const auto cases = testing::CasesOf("tiny-sd");
  ASSERT_FALSE(cases.empty());
  const fs::path path = testing::WeightsFile(cases.front());
  ASSERT_TRUE(fs::exists(path)) << path;
  at::Tensor view;
  std::string name;
  {
    auto file = engine::SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    const engine::TensorEntry& entry = (*file)->tensors().back();
    name = entry.name;
    view = engine::TensorView(*file, entry);
    EXPECT_EQ(view.data_ptr(), static_cast<const void*>((*file)->Data(entry)));
  }
  // The file object is gone; the view still reads the mapping.
  EXPECT_GT(view.numel(), 0) << name;
  EXPECT_TRUE(view.to(at::kDouble).isfinite().all().item<bool>());
}

TEST(SafetensorsTest, ReadsValuesAndMetadata) {
  const std::string header =
      R"({"__metadata__": {"format": "pt"}, "b": {"dtype": "I64", "shape": [2], "data_offsets": [8, 24]},)"
      R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  std::string buffer(24, '\0');
  const float a[2] = {1.5f, -2.0f};
  const std::int64_t b[2] = {7, -9};
  std::memcpy(buffer.data(), a, 8);
  std::memcpy(buffer.data() + 8, b, 16);
  auto header_info = engine::ParseSafetensors(File(header, buffer), "ok.safetensors");
  ASSERT_TRUE(header_info.ok()) << header_info.status();
  ASSERT_EQ(header_info->tensors.size(), 2u);
  EXPECT_EQ(header_info->tensors[0].name, "a");  // data order
  EXPECT_EQ(header_info->tensors[1].dtype, engine::DType::kI64);
  EXPECT_EQ(header_info->metadata.at("format"), "pt");

  testing::TempDir dir;
  const fs::path path = dir.path() / "ok.safetensors";
  std::ofstream(path, std::ios::binary) << File(header, buffer);
  auto file = engine::SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  at::Tensor ta = engine::TensorView(*file, *(*file)->Find("a"));
  at::Tensor tb = engine::TensorView(*file, *(*file)->Find("b"));
  EXPECT_EQ(ta[0].item<float>(), 1.5f);
  EXPECT_EQ(ta[1].item<float>(), -2.0f);
  EXPECT_EQ(tb[1].item<std::int64_t>(), -9);
}

struct BadCase {
  std::string name;
  std::string bytes;
  std::string message;
};

std::vector<BadCase> BadCases() {
  const std::string f32x2 = R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  std::string huge_length(8, '\0');
  huge_length[4] = 1;  // 2^32-byte header
  return {
      {"too_short", "abc", "file is 3 bytes"},
      {"header_over_limit", huge_length + "{}", "exceeds the limit"},
      {"header_past_end", File(f32x2, std::string(8, '\0')).substr(0, 20), "exceeds the file size minus 8"},
      {"not_an_object", File("[1, 2]", ""), "starting with '{'"},
      {"bad_json", File("{\"t\": ", ""), "not valid JSON"},
      {"duplicate", File(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", std::string(8, '\0')),
       "tensor 't' appears twice"},
      {"unknown_dtype", File(R"({"t": {"dtype": "F8", "shape": [2], "data_offsets": [0, 2]}})", std::string(2, '\0')),
       "tensor 't' has unknown dtype 'F8'"},
      {"size_mismatch", File(R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", std::string(8, '\0')),
       "tensor 't' is F32 [3]: expected 12 bytes, data_offsets give 8"},
      {"past_buffer", File(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", std::string(8, '\0')),
       "lies beyond the data buffer of 8 bytes"},
      {"backwards", File(R"({"t": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", std::string(8, '\0')),
       "run backwards"},
      {"overlap", File(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", std::string(8, '\0')),
       "overlaps tensor 'a'"},
      {"gap", File(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", std::string(8, '\0')),
       "gap in the data buffer: tensor 'a' starts at 4, expected 0"},
      {"trailing_bytes", File(f32x2, std::string(12, '\0')), "tensors cover 8 bytes of the 12-byte data buffer"},
      {"negative_dim", File(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", ""),
       "shape entry must be a non-negative integer"},
      {"shape_overflow", File(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", ""),
       "overflows the byte count"},
      {"metadata_not_strings", File(R"({"__metadata__": {"n": 1}})", ""), "__metadata__ value of 'n' must be a string"},
      {"missing_offsets", File(R"({"t": {"dtype": "F32", "shape": [1]}})", std::string(4, '\0')), "needs \"data_offsets\""},
  };
}

TEST(SafetensorsTest, MalformedFilesAreRefusedWithClearMessages) {
  for (const BadCase& c : BadCases()) {
    SCOPED_TRACE(c.name);
    const absl::Status status = ParseStatus(c.bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("'bad.safetensors'"));
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  }
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = engine::SafetensorsFile::Open("/nonexistent/x.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace atelier
