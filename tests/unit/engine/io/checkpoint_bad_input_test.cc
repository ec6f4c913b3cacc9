// Broken and hostile checkpoint files: each gives a clear error, never a crash, never code execution and never an
// allocation sized by a lie in the file. Archives are built here with libzip; pickles are written opcode by opcode.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "engine/io/pickle.h"
#include "engine/io/tensor_file.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Str(const std::string& s) {  // BINUNICODE
  std::string out = "X";
  const auto n = static_cast<std::uint32_t>(s.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return out + s;
}

std::string Long(std::int64_t v) {  // LONG1 with 8 bytes
  std::string out = "\x8a\x08";
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xFF));
  return out;
}

// {"w": _rebuild_tensor_v2(storage(FloatStorage, "0", "cpu", numel), offset, (size,), (stride,), False, OrderedDict())}
std::string TensorPickle(std::int64_t numel, std::int64_t offset, std::int64_t size, std::int64_t stride) {
  std::string p = "\x80\x02}";
  p += Str("w");
  p += "ctorch._utils\n_rebuild_tensor_v2\n(";
  p += "(" + Str("storage") + "ctorch\nFloatStorage\n" + Str("0") + Str("cpu") + Long(numel) + "tQ";
  p += Long(offset) + Long(size) + "\x85" + Long(stride) + "\x85" + "\x89" + "ccollections\nOrderedDict\n)R";
  p += "tRs.";
  return p;
}

std::string FloatBytes(int count) { return std::string(static_cast<std::size_t>(count) * 4, '\x01'); }

struct Entry {
  std::string name;
  std::string data;
  bool deflate = false;
};

void WriteZip(const fs::path& path, const std::vector<Entry>& entries) {
  int error = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  ASSERT_NE(z, nullptr);
  std::vector<std::string> keep;  // libzip reads the buffers at zip_close
  keep.reserve(entries.size());
  for (const Entry& e : entries) {
    keep.push_back(e.data);
    zip_source_t* source = zip_source_buffer(z, keep.back().data(), keep.back().size(), 0);
    ASSERT_NE(source, nullptr);
    const zip_int64_t index = zip_file_add(z, e.name.c_str(), source, ZIP_FL_OVERWRITE);
    ASSERT_GE(index, 0);
    zip_set_file_compression(z, static_cast<zip_uint64_t>(index), e.deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
  }
  ASSERT_EQ(zip_close(z), 0);
}

class BadCheckpointTest : public ::testing::Test {
 protected:
  fs::path Zip(const std::vector<Entry>& entries) {
    const fs::path path = dir_.path() / ("case" + std::to_string(counter_++) + ".ckpt");
    WriteZip(path, entries);
    return path;
  }
  absl::Status ReadStatus(const fs::path& path) { return engine::ReadTensorSet(path).status(); }

  testing::TempDir dir_;
  int counter_ = 0;
};

TEST_F(BadCheckpointTest, AWellFormedHandMadeArchiveLoads) {
  const fs::path path = Zip({{"archive/data.pkl", TensorPickle(4, 1, 2, 1)}, {"archive/data/0", FloatBytes(4)}});
  auto set = engine::ReadTensorSet(path);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->tensors.size(), 1u);
  EXPECT_EQ(set->tensors[0].first, "w");
  EXPECT_EQ(set->tensors[0].second.sizes().vec(), std::vector<std::int64_t>{2});
}

TEST_F(BadCheckpointTest, StorageSizeLiesAreRefusedBeforeAllocating) {
  // Fewer bytes than the pickle's element count needs.
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", TensorPickle(4, 0, 4, 1)}, {"a/data/0", FloatBytes(3)}})).message()),
              HasSubstr("storage entry 'a/data/0' declares 12 bytes; its 4 F32 elements need 16"));
  // A pickle claiming a terabyte: refused by the declared size, nothing allocated.
  const auto start = std::chrono::steady_clock::now();
  const absl::Status huge = ReadStatus(Zip({{"a/data.pkl", TensorPickle(int64_t{1} << 38, 0, 4, 1)}, {"a/data/0", FloatBytes(4)}}));
  EXPECT_THAT(std::string(huge.message()), HasSubstr("elements need 1099511627776"));
  // A zip bomb: 64 MiB of zeros deflated to a few KiB behind a 4-element tensor.
  const absl::Status bomb = ReadStatus(
      Zip({{"a/data.pkl", TensorPickle(4, 0, 4, 1)}, {"a/data/0", std::string(64 << 20, '\0'), /*deflate=*/true}}));
  EXPECT_THAT(std::string(bomb.message()), HasSubstr("declares 67108864 bytes; its 4 F32 elements need 16"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(BadCheckpointTest, ViewsOutsideTheirStorageAreRefused) {
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", TensorPickle(4, 2, 3, 1)}, {"a/data/0", FloatBytes(4)}})).message()),
              HasSubstr("tensor 'w' reaches element 4 of a storage of 4 elements"));
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", TensorPickle(4, 0, 2, -1)}, {"a/data/0", FloatBytes(4)}})).message()),
              HasSubstr("negative size or stride"));
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", TensorPickle(4, 0, int64_t{1} << 62, int64_t{1} << 62)},
                                          {"a/data/0", FloatBytes(4)}})).message()),
              HasSubstr("overflow"));
}

TEST_F(BadCheckpointTest, BrokenArchivesAreRefused) {
  const std::string good = TensorPickle(4, 0, 4, 1);
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", good.substr(0, good.size() - 3)}, {"a/data/0", FloatBytes(4)}})).message()),
              HasSubstr("data ends before STOP"));
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", good}, {"b/data.pkl", good}, {"a/data/0", FloatBytes(4)}})).message()),
              HasSubstr("more than one data.pkl"));
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/other.txt", "hello"}})).message()),
              HasSubstr("without <name>/data.pkl is not a PyTorch checkpoint"));
  EXPECT_THAT(std::string(ReadStatus(Zip({{"a/data.pkl", good}})).message()), HasSubstr("storage entry 'a/data/0' is missing"));
  // A real checkpoint cut in half.
  std::ifstream in(testing::FixturesDir() / "ckpt-formats" / "zip_state_dict.ckpt", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir_.path() / "half.ckpt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_EQ(ReadStatus(dir_.path() / "half.ckpt").code(), absl::StatusCode::kInvalidArgument);
  // A legacy checkpoint whose storage data is cut short.
  std::ifstream legacy(testing::FixturesDir() / "ckpt-formats" / "legacy_state_dict.pt", std::ios::binary);
  std::string legacy_bytes((std::istreambuf_iterator<char>(legacy)), std::istreambuf_iterator<char>());
  std::ofstream(dir_.path() / "short.pt", std::ios::binary) << legacy_bytes.substr(0, legacy_bytes.size() - 100);
  EXPECT_THAT(std::string(ReadStatus(dir_.path() / "short.pt").message()), HasSubstr("runs past the end of the file"));
}

TEST_F(BadCheckpointTest, EveryWayOfCallingCodeIsRefused) {
  const fs::path marker = "/tmp/atelier-pwned";
  fs::remove(marker);
  const std::string cmd = Str("touch /tmp/atelier-pwned");
  const std::vector<std::pair<std::string, std::string>> pickles = {
      {"GLOBAL + REDUCE", "\x80\x02" "cposix\nsystem\n" + cmd + "\x85R."},
      {"builtins.eval", "\x80\x02" "cbuiltins\neval\n" + Str("__import__('os')") + "\x85R."},
      {"STACK_GLOBAL (protocol 4)", "\x80\x04" + Str("subprocess") + Str("check_output") + "\x93" + cmd + "\x85R."},
      {"NEWOBJ", "\x80\x02" "csubprocess\nPopen\n" + cmd + "\x85\x81."},
      {"INST (protocol 0)", "(" + cmd + "ios\nsystem\n."},
      {"torch.load inside", "\x80\x02" "ctorch.serialization\nload\n" + cmd + "\x85R."},
  };
  for (const auto& [what, bytes] : pickles) {
    SCOPED_TRACE(what);
    const absl::Status status = engine::ReadTensorSet(Zip({{"a/data.pkl", bytes}})).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("nothing was run"));
  }
  EXPECT_FALSE(fs::exists(marker));
  // An unknown class is only a placeholder: the tensors beside it load (zip_lightning does this too).
  std::string with_class = TensorPickle(4, 0, 4, 1);
  with_class.insert(with_class.size() - 1, Str("cb") + "c__main__\nCallback\n)\x81}" + Str("k") + Str("v") + "sbs");
  auto set = engine::ReadTensorSet(Zip({{"a/data.pkl", with_class}, {"a/data/0", FloatBytes(4)}}));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->tensors.size(), 1u);
}

TEST_F(BadCheckpointTest, PickleWalkerLimitsAndUnknownOpcodes) {
  engine::pickle::Limits tight;
  tight.max_stack = 16;
  std::string deep = "\x80\x02";
  for (int i = 0; i < 32; ++i) deep += "N";
  auto status = engine::pickle::Unpickle(deep, "deep", nullptr, nullptr, tight).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("stack too deep"));
  status = engine::pickle::Unpickle("\x80\x02\xff.", "odd", nullptr).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("unknown opcode 0xff"));
  status = engine::pickle::Unpickle("\x80\x02h\x05.", "memo", nullptr).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("memo entry 5 was never stored"));
  status = engine::pickle::Unpickle("\x80\x02X\xff\xff\xff\x7f", "long", nullptr).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("runs past the end of the data"));
  status = engine::pickle::Unpickle("\x80\x02R.", "empty", nullptr).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("stack underflow"));
}

TEST_F(BadCheckpointTest, NonFiles) {
  fs::create_directory(dir_.path() / "model.safetensors");
  EXPECT_THAT(std::string(ReadStatus(dir_.path() / "model.safetensors").message()), HasSubstr("is a directory"));
  std::ofstream(dir_.path() / "garbage.ckpt") << "definitely not a model";
  EXPECT_THAT(std::string(ReadStatus(dir_.path() / "garbage.ckpt").message()),
              HasSubstr("neither safetensors nor a PyTorch checkpoint"));
  std::ofstream(dir_.path() / "empty.safetensors");
  EXPECT_EQ(ReadStatus(dir_.path() / "empty.safetensors").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadStatus(dir_.path() / "missing.ckpt").code(), absl::StatusCode::kNotFound);
}

TEST_F(BadCheckpointTest, UnreadableFile) {
  if (geteuid() == 0) GTEST_SKIP() << "running as root: file permissions cannot make a file unreadable";
  fs::copy_file(testing::FixturesDir() / "ckpt-formats" / "io.safetensors", dir_.path() / "locked.safetensors");
  chmod((dir_.path() / "locked.safetensors").c_str(), 0);
  EXPECT_THAT(std::string(ReadStatus(dir_.path() / "locked.safetensors").message()), HasSubstr("Permission denied"));
}

}  // namespace
}  // namespace atelier
