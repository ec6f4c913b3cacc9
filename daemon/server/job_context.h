// The running job as a runner (and, through host::JobSink, a plugin) sees it: control flags, event publishing,
// stage timings. It is the job layer's jobs::JobEvents: the one place where a job's events become gRPC messages.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "jobs/job_events.h"
#include "server/job.h"

#include "server/outputs_saver.h"

namespace atelier::server {

class JobContext final : public jobs::JobEvents {
 public:
  JobContext(std::shared_ptr<Job> job, int max_message_bytes);

  const v1::GenerateRequest& request() const { return job_->request(); }
  // The runner's parse of the request when it was admitted (may be null).
  const PreparedJob* prepared() const { return job_->prepared(); }
  const std::string& job_id() const override { return job_->id(); }

  // True once the job must stop: Cancel, the submitting client gone, or daemon shutdown. Check every step.
  bool ShouldStop() const override {
    if (job_->cancel_requested()) return true;
    if (deadline_ != absl::InfiniteFuture() && absl::Now() > deadline_) {  // the wall-time limit
      timed_out_ = true;
      job_->RequestCancel("the job ran past the daemon's wall-time limit (--max-job-seconds)");
      return true;
    }
    return false;
  }
  // The job stops (as if cancelled) once the wall clock passes `deadline`.
  void set_deadline(absl::Time deadline) { deadline_ = deadline; }
  bool timed_out() const { return timed_out_; }
  // True once per Skip request: end the current image early and go on with the next.
  bool TakeSkip() override { return job_->TakeSkip(); }
  // A cancelled job is abandoned when no stream is left to receive it, or when other jobs wait for the worker (its
  // last prediction is decoded only while that costs nobody anything).
  bool Abandoned() const override {
    return job_->cancel_requested() && (job_->ObserverCount() == 0 || (others_waiting_ && others_waiting_()));
  }
  void set_others_waiting(std::function<bool()> probe) { others_waiting_ = std::move(probe); }
  // --outputs-dir: the export plugin's files are also written there (a failure is a warning of the job).
  void set_outputs(OutputsSaver* outputs) { outputs_ = outputs; }

  // ---- Events ----
  void Started(std::vector<std::int64_t> seeds, std::vector<std::int64_t> subseeds, int image_count) override;
  // Lossy. Fills elapsed and ETA (WebUI's elapsed / progress - elapsed) from progress.progress().
  void Progress(v1::Progress progress);
  // Reliable (never dropped). RESOURCE_EXHAUSTED when larger than the gRPC message limit. An artifact larger than
  // the limit goes out in chunks (Artifact.offset / total_size / last), which clients join.
  absl::Status Result(v1::Result result);
  absl::Status Frame(v1::Frame frame);
  absl::Status Artifact(v1::Artifact artifact);

  // Adds wall time to a stage (kept in order of first use).
  void AddTiming(const std::string& stage, double seconds) override;
  const std::vector<std::pair<std::string, double>>& timings() const { return timings_; }
  void Warn(const std::string& message) override;
  const std::vector<std::string>& warnings() const { return warnings_; }
  // A Plugins.Invoke job's JSON result.
  void set_invoke_result(std::string json) { invoke_result_ = std::move(json); }
  const std::string& invoke_result() const { return invoke_result_; }

  // ---- jobs::JobEvents ----
  void Progress(jobs::ProgressEvent progress) override;
  absl::Status Result(jobs::ResultEvent result) override;

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
  std::vector<std::string> warnings_;
  std::function<bool()> others_waiting_;
  absl::Time deadline_ = absl::InfiniteFuture();
  mutable bool timed_out_ = false;
  std::string invoke_result_;
  OutputsSaver* outputs_ = nullptr;
};

}  // namespace atelier::server
