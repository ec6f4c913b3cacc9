// Admission, the fair queue, and the one executor thread that owns the device and runs jobs one at a time.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/caller.h"
#include "server/client_quotas.h"
#include "server/job.h"
#include "server/job_queue.h"
#include "server/job_runner.h"

#include "server/outputs_saver.h"

namespace atelier::server {

struct JobManagerOptions {
  int max_queue = 64;
  int max_message_bytes = 64 * 1024 * 1024;
  // A running job past this many seconds is stopped (DEADLINE_EXCEEDED naming the limit); 0: no limit.
  double max_job_seconds = 0;
  // --outputs-dir: where the export plugin's files are saved too (null: nowhere). Outlives the manager.
  OutputsSaver* outputs = nullptr;
  // --instance-name: prefixed to the job ids this daemon makes ("NAME-<32 hex>"), so a job id names the daemon that
  // owns it and a proxy in front of several daemons can route Watch / Cancel / Skip to it (examples/scale-out).
  std::string instance_name;
};

class JobManager {
 public:
  JobManager(JobRunner& runner, JobManagerOptions options);
  ~JobManager();  // Shutdown()
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Starts the executor thread.
  void Start();

  // Queues a prepared request for `caller`. `job_id` empty = generate one. ALREADY_EXISTS for a job id in use,
  // RESOURCE_EXHAUSTED when the queue is full or the caller's quota (caller.limits) refuses it, UNAVAILABLE while
  // shutting down.
  absl::StatusOr<std::shared_ptr<Job>> Submit(std::string job_id, const Caller& caller, v1::GenerateRequest request,
                                              std::shared_ptr<const PreparedJob> prepared = nullptr);
  // A queued or running job; nullptr otherwise.
  std::shared_ptr<Job> Find(const std::string& job_id) const;
  // A queued job ends at once (CANCELLED); a running one stops at its next step boundary. Returns the state the
  // job had. NOT_FOUND when no such job is queued or running; PERMISSION_DENIED when `by` is given, is no admin
  // and does not own the job.
  absl::StatusOr<v1::JobState> Cancel(const std::string& job_id, const std::string& reason,
                                      const Caller* by = nullptr);
  absl::StatusOr<v1::JobState> Skip(const std::string& job_id, const Caller* by = nullptr);

  struct Listing {
    std::shared_ptr<Job> running;
    std::vector<std::shared_ptr<Job>> queued;  // in execution order
  };
  Listing List() const;

  // Runs `task` on the executor thread between two jobs (before any queued job) and returns its status: model
  // loads and unloads go through here, so they never overlap a job. Blocks the caller until it ran.
  // UNAVAILABLE while shutting down. Never call it from the executor thread (a job or plugin hook).
  absl::Status RunExclusive(std::function<absl::Status()> task);
  int max_queue() const { return queue_.max_queued(); }
  bool accepting() const { return !shutting_down_.load(); }

  // The executor is stuck (a plugin hook that never returns) and the process is about to exit for its supervisor to
  // restart it: ends the running job with `running_status` and every queued one with UNAVAILABLE (`queued_reason`:
  // clients retry them), refuses new jobs, and does not wait for the executor. Safe from any thread.
  void AbandonForRestart(const absl::Status& running_status, const std::string& queued_reason);

  // Graceful stop: refuses new jobs, ends every queued job (UNAVAILABLE, saying it never started), cancels the
  // running job (it stops at its next step boundary), and joins the executor. Idempotent; safe from any thread
  // except the executor.
  void Shutdown();

 private:
  void ExecutorLoop();
  void RunControlTasks();
  void RunJob(const std::shared_ptr<Job>& job);
  void Forget(const std::string& job_id);
  void PublishPositions();

  JobRunner& runner_;
  const JobManagerOptions options_;
  JobQueue queue_;
  ClientQuotas quotas_;
  std::atomic<bool> shutting_down_{false};
  std::once_flag shutdown_once_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Job>> active_;  // queued and running
  std::shared_ptr<Job> running_;
  struct ControlTask {
    std::function<absl::Status()> task;
    std::promise<absl::Status> done;
  };
  std::deque<ControlTask> control_;  // guarded by mu_
  std::thread executor_;
};

// The status of a job whose runner threw `e`: RESOURCE_EXHAUSTED for out-of-memory errors, INTERNAL otherwise.
absl::Status JobExceptionStatus(const std::exception& e);

// A new random job id (32 hex digits).
std::string NewJobId();

}  // namespace atelier::server
