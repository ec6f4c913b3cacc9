// Helpers shared by the tests: fixture and plugin locations, temporary folders, a recording JobSink.
#pragma once

#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "host/job_sink.h"

namespace atelier::testing {

// The golden fixtures: $ATELIER_FIXTURES, else ../shared/fixtures beside the source tree.
std::filesystem::path FixturesDir();
// A deliberately broken or probing test plugin (tests/plugins/<name>.c) as built.
std::filesystem::path TestPlugin(const std::string& name);
// A plugin built into build/plugins (e.g. "invert").
std::filesystem::path BuiltPlugin(const std::string& name);
// build/atelierd and build/atelier.
std::filesystem::path DaemonBinary();
std::filesystem::path ClientBinary();

// A fresh directory, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Copies `plugin` into `dir` under `file_name` (a fresh inode, so dlopen sees a distinct library).
void CopyPlugin(const std::filesystem::path& plugin, const std::filesystem::path& dir, const std::string& file_name);

// Resident set size of this process in bytes.
long long CurrentRssBytes();

// A JobSink that records what plugins send.
class RecordingSink final : public host::JobSink {
 public:
  struct Frame {
    std::string plugin;
    int index;
    std::string png;
    int width, height;
  };
  struct Artifact {
    std::string plugin, name, mime_type, data;
  };
  struct ProgressReport {
    std::string plugin, stage;
    int done, total;
  };

  bool cancelled = false;
  bool IsCancelled() const override { return cancelled; }
  absl::Status ReportPluginProgress(const std::string& plugin, const std::string& stage, int done, int total,
                                    const std::string& text) override;
  absl::Status EmitFrame(const std::string& plugin, int index, std::string png, int width, int height) override;
  absl::Status EmitArtifact(const std::string& plugin, std::string name, std::string mime_type,
                            std::string data) override;

  std::vector<Frame> frames;
  std::vector<Artifact> artifacts;
  std::vector<ProgressReport> progress;
};

}  // namespace atelier::testing
