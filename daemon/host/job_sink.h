// What the host needs from a running job to serve plugins' job-scoped host functions. The server's job
// implements it; the host layer knows nothing of gRPC.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace atelier::host {

class JobSink {
 public:
  virtual ~JobSink() = default;
  // True once the job was cancelled. Thread-safe.
  virtual bool IsCancelled() const = 0;
  // A plugin stage's progress. Thread-safe.
  virtual absl::Status ReportPluginProgress(const std::string& plugin, const std::string& stage, int done,
                                            int total, const std::string& text) = 0;
  // An intermediate frame, PNG-encoded. Thread-safe; never dropped.
  virtual absl::Status EmitFrame(const std::string& plugin, int index, std::string png, int width, int height) = 0;
  // A file made by a plugin. Thread-safe; never dropped.
  virtual absl::Status EmitArtifact(const std::string& plugin, std::string name, std::string mime_type,
                                    std::string data) = 0;
};

}  // namespace atelier::host
