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

// The next free WebUI sequence number in `dir`: one more than the largest "NNNNN-..." file name there (0 when none).
int NextImageNumber(const std::filesystem::path& dir);

class ArtifactFiles {
 public:
  explicit ArtifactFiles(std::filesystem::path dir) : dir_(std::move(dir)) {}
  // The path of the finished file after its last chunk, nullopt before. DATA_LOSS for a chunk out of order,
  // INVALID_ARGUMENT for a name with a directory in it, INTERNAL when the file cannot be written. The export
  // plugin's files ("1234.gif", "1234-sheet.png") get WebUI's "{seq:05}-" in front, one number per job, as
  // sd-webui-animatediff names its outputs.
  absl::StatusOr<std::optional<std::filesystem::path>> Add(const v1::Artifact& artifact);

 private:
  std::filesystem::path dir_;
  std::map<std::string, std::uint64_t> written_;  // name -> bytes so far, for files still arriving
  int export_number_ = -1;                         // the job's sequence number for export files
};

}  // namespace atelier::cli
