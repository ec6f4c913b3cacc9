// `atelierd --outputs-dir DIR`: the export plugin's files also saved on the daemon's side, in WebUI's layout
// (sd-webui-animatediff: <outdir_samples>/AnimateDiff/<YYYY-MM-DD>/{seq:05}-{name}, outdir_samples being
// txt2img-images or img2img-images). Off by default: clients are usually remote and save what they receive.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::server {

class OutputsSaver {
 public:
  // Creates `dir` if needed and checks that files can be written there: INVALID_ARGUMENT naming the folder and
  // the reason otherwise (the daemon refuses to start).
  static absl::StatusOr<std::unique_ptr<OutputsSaver>> Open(const std::filesystem::path& dir);

  // Writes one file of job `job_id`; all files of a job share one sequence number. Returns the path.
  absl::StatusOr<std::filesystem::path> Save(const std::string& job_id, bool img2img, const std::string& name,
                                             const std::string& data);

 private:
  explicit OutputsSaver(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
  std::mutex mu_;
  std::map<std::string, int> numbers_;  // job id -> its sequence number (kept for the last jobs only)
};

}  // namespace atelier::server
