// Artifacts a job streams (a plugin's GIF, MP4, contact sheet), written to a folder. A file larger than the daemon's
// message limit arrives in chunks (Artifact.offset / total_size / last); they are appended in order and the file
// counts as written after its last chunk.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"

namespace atelier::cli {

class ArtifactFiles {
 public:
  explicit ArtifactFiles(std::filesystem::path dir) : dir_(std::move(dir)) {}
  // The path of the finished file after its last chunk, nullopt before. DATA_LOSS for a chunk out of order,
  // INVALID_ARGUMENT for a name with a directory in it, INTERNAL when the file cannot be written.
  absl::StatusOr<std::optional<std::filesystem::path>> Add(const v1::Artifact& artifact);

 private:
  std::filesystem::path dir_;
  std::map<std::string, std::uint64_t> written_;  // name -> bytes so far, for files still arriving
};

}  // namespace atelier::cli
