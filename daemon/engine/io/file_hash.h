// Checkpoint hashes as WebUI shows them, with a cache so a multi-GB file is hashed once.
//  - "Model hash" (infotext, titles): the first 10 hex digits of the SHA-256 of the whole file.
//  - The old short hash: 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::engine {

// Full SHA-256 of a file, lower-case hex (OpenSSL).
absl::StatusOr<std::string> Sha256File(const std::filesystem::path& path);
// WebUI's "AutoV3" hash of a LoRA (hashes.addnet_hash_safetensors): the SHA-256 of a safetensors file's bytes after
// its header (from offset 8 + header length to the end), so editing the metadata leaves it unchanged.
absl::StatusOr<std::string> AddnetHash(const std::filesystem::path& path);
// WebUI's old model_hash: sha256 of 0x10000 bytes from offset 0x100000 (fewer when the file is shorter), 8 hex.
absl::StatusOr<std::string> ShortHash(const std::filesystem::path& path);
// The infotext "Model hash": the first 10 hex digits of the full SHA-256.
inline std::string ModelHash(const std::string& sha256) { return sha256.substr(0, 10); }

// Remembers full hashes by path, size and modification time in a JSON file, like WebUI's cache.json.
class HashCache {
 public:
  // `file` may be empty: nothing is persisted then. An unreadable or corrupt cache file is ignored.
  explicit HashCache(std::filesystem::path file);

  // Which hash of a file: the whole file's SHA-256, or AutoV3 (AddnetHash).
  enum class Kind { kSha256, kAddnet };
  // The cached hash when the file is unchanged, else computes and stores it.
  absl::StatusOr<std::string> Sha256(const std::filesystem::path& path, Kind kind = Kind::kSha256);
  // The cached hash when the file is unchanged; empty otherwise (never computes).
  std::string Cached(const std::filesystem::path& path, Kind kind = Kind::kSha256);

 private:
  struct Entry {
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::string sha256;
  };
  void Save();  // with mu_ held

  std::filesystem::path file_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace atelier::engine
