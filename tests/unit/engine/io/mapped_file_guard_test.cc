// A mapped file truncated by another writer: reading past its new end yields zeros and is counted, not SIGBUS.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "engine/io/mapped_file_guard.h"
#include "engine/io/safetensors.h"

namespace atelier::engine {
namespace {

TEST(MappedFileGuardTest, ReadingPastATruncationGivesZerosNotSigbus) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("atelier-truncate-" + std::to_string(::getpid()));
  {
    std::ofstream out(path, std::ios::binary);
    const std::string page(4096, 'x');
    for (int i = 0; i < 16; ++i) out << page;
  }
  auto mapped = MappedFile::Map(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  const volatile char* bytes = (*mapped)->bytes().data();
  ASSERT_EQ((*mapped)->bytes().size(), 16u * 4096u);
  std::filesystem::resize_file(path, 4096);  // what `cp other.safetensors this.safetensors` does first
  const std::uint64_t before = MappedFileFaults();
  EXPECT_EQ(bytes[100], 'x');               // still inside the file
  EXPECT_EQ(bytes[5 * 4096 + 7], 0);        // past the new end: a repaired fault
  EXPECT_EQ(bytes[5 * 4096 + 8], 0);        // the same page: no second fault
  EXPECT_EQ(bytes[15 * 4096], 0);
  EXPECT_EQ(MappedFileFaults(), before + 2);
  mapped->reset();
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace atelier::engine
