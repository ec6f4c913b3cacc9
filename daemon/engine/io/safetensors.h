// safetensors reader: memory-mapped read-only, zero-copy, validated before use.
//
// Validation (the format's rules, as the reference implementation checks them): the 8-byte little-endian header
// length is <= 100 MB and <= file size - 8; the header is a JSON object starting with '{'; no duplicate names;
// every dtype is known; shape x dtype size equals the tensor's byte range (overflow-checked); every range lies
// inside the data buffer; ranges are contiguous, non-overlapping and cover the whole buffer. Every error names the
// file, the tensor and the expected vs actual values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace atelier::engine {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "BF16", ... as written in safetensors headers.
const char* DTypeName(DType dtype);
std::size_t DTypeSize(DType dtype);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte range within the data buffer
  std::uint64_t end = 0;
};

// The parsed and validated header of a safetensors file.
struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  // in file (data offset) order
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;  // where the data buffer starts in the file (8 + header length)
};

// Validates `bytes` (a whole file) and returns its header. `label` names the file in error messages.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(absl::string_view bytes, absl::string_view label);

// A read-only memory mapping of a whole file. Shared by every tensor view of it.
class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Map(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

 private:
  MappedFile(const void* data, std::size_t size) : data_(data), size_(size) {}
  const void* data_;
  std::size_t size_;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::filesystem::path& path);

  const std::vector<TensorEntry>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when absent.
  const TensorEntry* Find(absl::string_view name) const;
  // Start of a tensor's bytes in the mapping.
  const std::byte* Data(const TensorEntry& entry) const;
  // Keeps the mapping alive (tensor views hold it).
  const std::shared_ptr<const MappedFile>& mapping() const { return mapping_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::shared_ptr<const MappedFile> mapping_;
  SafetensorsHeader header_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

}  // namespace atelier::engine
