// The LoRA files under models/Lora and models/LyCORIS as WebUI's extra networks know them (networks.py
// list_available_networks): a network's name is its file name without extension, its alias the training metadata's
// ss_output_name (WebUI's default "Alias from file"); a prompt's <lora:NAME:...> finds a network by name or alias,
// the later file winning a clash. Hashes are WebUI's AutoV3 (sha256 of a safetensors file after its header), what
// the infotext's "Lora hashes" carries. Thread-safe: job admission (gRPC threads) and the executor both ask.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/io/file_hash.h"
#include "engine/io/model_folders.h"

namespace atelier::engine {

struct LoraFile {
  ModelFileEntry file;
  std::filesystem::path path;
  std::string name;   // file name without extension (WebUI's network name)
  std::string alias;  // ss_output_name from the metadata, else the name
  std::map<std::string, std::string> metadata;  // the safetensors __metadata__ (kohya's ss_* training fields)
  // From the metadata (ss_base_model_version / ss_sd_model_name / ss_v2): "SD1", "SD2", "SDXL" or "Unknown".
  std::string sd_version;
  std::string error;  // why the header cannot be read; empty when it can
};

class LoraCatalog {
 public:
  // `folders` may be null (nothing listed); `hashes` must outlive the catalog.
  LoraCatalog(const ModelFolders* folders, HashCache* hashes) : folders_(folders), hashes_(hashes) {}

  // Every LoRA file, sorted by filename. Headers are read again only for files that changed.
  std::vector<LoraFile> List();
  // The network a prompt names (<lora:NAME:...>): by alias or name as WebUI matches them, then case-insensitively.
  // NOT_FOUND naming the nearest names there are (or all of them).
  absl::StatusOr<LoraFile> Find(const std::string& name);
  // WebUI's hash of a LoRA: the metadata's sshs_model_hash when kohya wrote one, else AutoV3 for safetensors (the
  // SHA-256 after the header) and the whole file's SHA-256 for .pt / .ckpt; computed once per file version, cached.
  absl::StatusOr<std::string> Hash(const LoraFile& lora);
  // The hash when already known, else empty (never reads the file).
  std::string CachedHash(const LoraFile& lora) const;

 private:
  struct Header {
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::map<std::string, std::string> metadata;
    std::string error;
  };
  const ModelFolders* folders_;
  HashCache* hashes_;
  std::mutex mu_;
  std::map<std::string, Header> headers_;  // by path
};

// The names in `candidates` closest to `name` (edit distance on lower case, or sharing a prefix), at most `limit`;
// every candidate when none is near. For "not found" messages.
std::vector<std::string> NearestNames(const std::string& name, const std::vector<std::string>& candidates,
                                      size_t limit = 8);

}  // namespace atelier::engine
