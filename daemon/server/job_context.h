// The running job as a runner (and, through host::JobSink, a plugin) sees it: control flags, event publishing,
// stage timings.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "host/job_sink.h"
#include "server/job.h"

namespace atelier::server {

class JobContext final : public host::JobSink {
 public:
  JobContext(std::shared_ptr<Job> job, int max_message_bytes);

  const v1::GenerateRequest& request() const { return job_->request(); }
  const std::string& job_id() const { return job_->id(); }

  // True once the job must stop: Cancel, the submitting client gone, or daemon shutdown. Check every step.
  bool ShouldStop() const { return job_->cancel_requested(); }
  // True once per Skip request: end the current image early and go on with the next.
  bool TakeSkip() { return job_->TakeSkip(); }

  // ---- Events ----
  void Started(std::vector<std::int64_t> seeds, std::vector<std::int64_t> subseeds, int image_count);
  // Lossy. Fills elapsed and ETA (WebUI's elapsed / progress - elapsed) from progress.progress().
  void Progress(v1::Progress progress);
  // Reliable (never dropped). RESOURCE_EXHAUSTED when larger than the gRPC message limit.
  absl::Status Result(v1::Result result);
  absl::Status Frame(v1::Frame frame);
  absl::Status Artifact(v1::Artifact artifact);

  // Adds wall time to a stage (kept in order of first use).
  void AddTiming(const std::string& stage, double seconds);
  const std::vector<std::pair<std::string, double>>& timings() const { return timings_; }

  // ---- host::JobSink ----
  bool IsCancelled() const override { return ShouldStop(); }
  absl::Status ReportPluginProgress(const std::string& plugin, const std::string& stage, int done, int total,
                                    const std::string& text) override;
  absl::Status EmitFrame(const std::string& plugin, int index, std::string png, int width, int height) override;
  absl::Status EmitArtifact(const std::string& plugin, std::string name, std::string mime_type,
                            std::string data) override;

 private:
  absl::Status CheckSize(const v1::GenerateEvent& event, const char* what) const;

  std::shared_ptr<Job> job_;
  const int max_message_bytes_;
  const absl::Time started_;
  std::vector<std::pair<std::string, double>> timings_;
};

// Measures a stage's wall time into a JobContext.
class StageTimer {
 public:
  StageTimer(JobContext& context, std::string stage)
      : context_(context), stage_(std::move(stage)), start_(absl::Now()) {}
  ~StageTimer() { context_.AddTiming(stage_, absl::ToDoubleSeconds(absl::Now() - start_)); }
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

 private:
  JobContext& context_;
  std::string stage_;
  absl::Time start_;
};

}  // namespace atelier::server
