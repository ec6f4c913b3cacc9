#include "server/job_manager.h"

#include <exception>
#include <new>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/models/cpu_allocator.h"
#include "engine/models/runtime.h"
#include "server/daemon_metrics.h"
#include "server/job_context.h"
#include "util/log.h"
#include "util/user_text.h"

namespace atelier::server {

absl::Status JobExceptionStatus(const std::exception& e) {
  const absl::string_view what = e.what();
  // Out of memory (std::bad_alloc, libtorch's CPU allocator, CUDA): the job was too large for what is free now; the
  // model stays loaded and smaller jobs go on.
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr || absl::StrContains(what, "can't allocate memory") ||
      absl::StrContains(what, "out of memory") || absl::StrContains(what, "Out of memory")) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the job ran out of memory (", what.substr(0, 200), "): make it smaller (size, batch, frames) or wait for "
        "other work to finish; the model stays loaded"));
  }
  return absl::InternalError(absl::StrCat("the job failed with an unexpected error: ", what.substr(0, 2000)));
}

std::string NewJobId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("%016x%016x", rng(), rng());
}

JobManager::JobManager(JobRunner& runner, JobManagerOptions options)
    : runner_(runner), options_(options), queue_(options.max_queue) {}

JobManager::~JobManager() { Shutdown(); }

void JobManager::Start() { executor_ = std::thread([this] { ExecutorLoop(); }); }

absl::StatusOr<std::shared_ptr<Job>> JobManager::Submit(std::string job_id, const Caller& caller,
                                                         v1::GenerateRequest request,
                                                         std::shared_ptr<const PreparedJob> prepared) {
  if (shutting_down_.load()) {
    return absl::UnavailableError("the daemon is shutting down and accepts no new jobs");
  }
  // The cost budget: a job estimated to run past the wall-time limit is refused before it takes the worker.
  const double own_limit = caller.limits.job_seconds.value_or(0);
  const double limit = own_limit > 0 && (options_.max_job_seconds <= 0 || own_limit < options_.max_job_seconds)
                           ? own_limit
                           : options_.max_job_seconds;
  if (prepared != nullptr && limit > 0) {
    const std::optional<double> estimate = prepared->estimated_seconds();
    if (estimate && *estimate > limit) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "this job would run about %.0f s on this device (estimated from its size, steps, batch and passes), over "
          "%s limit of %.0f s (%s): make it smaller, or ask the operator to raise the limit",
          *estimate, limit == own_limit ? "your token's" : "the daemon's", limit,
          limit == own_limit ? "job_seconds" : "--max-job-seconds"));
    }
  }
  const double work = prepared != nullptr ? prepared->quota_work() : 0.0;
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (job_id.empty()) {
      do {
        job_id = options_.instance_name.empty() ? NewJobId() : absl::StrCat(options_.instance_name, "-", NewJobId());
      } while (active_.count(job_id) > 0);
    } else if (active_.count(job_id) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("job id ", Quoted(job_id), " (force_task_id) is already in use"));
    }
    // The caller's quota, counted under the same lock that registers the job, so parallel submits cannot pass it.
    int active = 0, queued = 0;
    for (const auto& [id, other] : active_) {
      // A finished job leaves active_ a moment after its stream ended: it no longer counts (Job's lock is a leaf).
      if (other->owner() != caller.owner || other->finished()) continue;
      ++active;
      if (other != running_) ++queued;  // active_ holds the queued jobs and the running one
    }
    if (absl::Status st = quotas_.Admit(caller.owner, caller.limits, work, queued, active); !st.ok()) return st;
    job = std::make_shared<Job>(job_id, caller.client_id, std::move(request));
    job->set_prepared(std::move(prepared));
    job->set_owner(caller.owner);
    job->set_max_seconds(limit);
    // Registered before queueing, so Cancel finds it even if the executor picks it up at once.
    active_[job_id] = job;
  }
  // Every job reports its place once, even one an idle executor takes before PublishPositions runs.
  const int waiting = static_cast<int>(queue_.size());
  job->PublishPosition(waiting, waiting + 1);
  // Logged before the push: once queued, an idle executor may start (and log) the job at once.
  Log(LogLevel::kInfo, "job queued",
      {{"job", job->id()}, {"client", job->client_id()}, {"owner", caller.owner},
       {"work_mpx_steps", absl::StrFormat("%.2f", work)}, {"waiting", absl::StrCat(waiting)}});
  if (absl::Status pushed = queue_.Push(job); !pushed.ok()) {
    Log(LogLevel::kInfo, "job refused", {{"job", job->id()}, {"message", std::string(pushed.message())}});
    quotas_.Refund(caller.owner, work);
    Forget(job->id());
    return pushed;
  }

  PublishPositions();
  return job;
}

std::shared_ptr<Job> JobManager::Find(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = active_.find(job_id);
  return it == active_.end() ? nullptr : it->second;
}

namespace {

absl::Status CheckMayControl(const Job& job, const Caller* by) {
  if (by == nullptr || by->admin || job.owner() == by->owner) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("job ", Quoted(job.id()), " belongs to another client; only its "
                                                  "submitter or an admin token may cancel or skip it"));
}

}  // namespace

absl::StatusOr<v1::JobState> JobManager::Cancel(const std::string& job_id, const std::string& reason,
                                                const Caller* by) {
  std::shared_ptr<Job> job = Find(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("no queued or running job ", Quoted(job_id)));
  if (absl::Status st = CheckMayControl(*job, by); !st.ok()) return st;
  const v1::JobState previous = job->state();
  job->RequestCancel(reason);
  if (queue_.Remove(job_id)) {
    job->Finish(absl::CancelledError(reason), v1::Finished());
    DaemonMetrics::Global().JobFinished("cancelled", absl::ToDoubleSeconds(absl::Now() - job->submitted_at()), 0, {});
    Log(LogLevel::kInfo, "job finished", {{"job", job->id()}, {"client", job->client_id()}, {"state", "cancelled"},
                                          {"message", reason}});
    Forget(job_id);
    PublishPositions();
  }
  // Otherwise it is running (or being picked up): it stops at its next step boundary.
  return previous;
}

absl::StatusOr<v1::JobState> JobManager::Skip(const std::string& job_id, const Caller* by) {
  std::shared_ptr<Job> job = Find(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("no queued or running job ", Quoted(job_id)));
  if (absl::Status st = CheckMayControl(*job, by); !st.ok()) return st;
  job->RequestSkip();
  return job->state();
}

JobManager::Listing JobManager::List() const {
  Listing listing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    listing.running = running_;
  }
  listing.queued = queue_.Ordered();
  return listing;
}

void JobManager::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    {
      std::lock_guard<std::mutex> lock(mu_);  // ordered with RunExclusive's check
      shutting_down_.store(true);
    }
    for (const auto& job : queue_.Close()) {
      job->RequestCancel("the daemon is shutting down");
      job->Finish(absl::UnavailableError("the daemon is shutting down; the job was not started"), v1::Finished());
      DaemonMetrics::Global().JobFinished("cancelled", absl::ToDoubleSeconds(absl::Now() - job->submitted_at()), 0,
                                          {});
      Forget(job->id());
    }
    std::shared_ptr<Job> running;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running = running_;
    }
    if (running) running->RequestCancel("the daemon is shutting down");
    if (executor_.joinable()) executor_.join();
    RunControlTasks();  // in case the executor never ran
  });
}

void JobManager::AbandonForRestart(const absl::Status& running_status, const std::string& queued_reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_.store(true);
  }
  for (const auto& job : queue_.Close()) {
    job->RequestCancel(queued_reason);
    job->Finish(absl::UnavailableError(queued_reason), v1::Finished());
    DaemonMetrics::Global().JobFinished("cancelled", absl::ToDoubleSeconds(absl::Now() - job->submitted_at()), 0, {});
  }
  std::shared_ptr<Job> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    running = running_;
  }
  if (running != nullptr) {
    running->RequestCancel(std::string(running_status.message()));
    running->Finish(running_status, v1::Finished());
    DaemonMetrics::Global().JobFinished("failed", 0, absl::ToDoubleSeconds(absl::Now() - running->started_at()), {});
    Log(LogLevel::kError, "job finished", {{"job", running->id()}, {"client", running->client_id()},
                                           {"state", "failed"}, {"message", std::string(running_status.message())}});
  }
}

absl::Status JobManager::RunExclusive(std::function<absl::Status()> task) {
  std::future<absl::Status> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_.load()) return absl::UnavailableError("the daemon is shutting down");
    control_.push_back({std::move(task), {}});
    done = control_.back().done.get_future();
  }
  queue_.Wake();
  return done.get();
}

void JobManager::RunControlTasks() {
  while (true) {
    ControlTask next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (control_.empty()) return;
      next = std::move(control_.front());
      control_.pop_front();
    }
    absl::Status status;
    if (shutting_down_.load()) {
      status = absl::UnavailableError("the daemon is shutting down");
    } else {
      try {
        status = next.task();
      } catch (const std::exception& e) {
        status = absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
      }
    }
    next.done.set_value(status);
  }
}

void JobManager::ExecutorLoop() {
  while (true) {
    RunControlTasks();
    if (queue_.closed()) break;
    if (std::shared_ptr<Job> job = queue_.PopBlocking()) RunJob(job);
  }
  RunControlTasks();  // answers any task that arrived during shutdown
}

void JobManager::RunJob(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = job;
  }
  job->MarkRunning();
  PublishPositions();
  Log(LogLevel::kInfo, "job started",
      {{"job", job->id()}, {"client", job->client_id()},
       {"queued_s", absl::StrFormat("%.2f", absl::ToDoubleSeconds(job->started_at() - job->submitted_at()))}});

  JobContext context(job, options_.max_message_bytes);
  context.set_outputs(options_.outputs);
  if (job->max_seconds() > 0) context.set_deadline(absl::Now() + absl::Seconds(job->max_seconds()));
  // A cancelled job's remaining courtesy work (decoding its last prediction) yields to jobs waiting behind it.
  context.set_others_waiting([this] { return queue_.size() > 0; });
  absl::Status status = absl::CancelledError(job->cancel_reason());  // cancelled before it started
  if (!job->cancel_requested()) {
    const std::unique_ptr<engine::OpProfile> profile = engine::MaybeProfile(job->id());  // ATELIER_PROFILE_DIR
    try {
      status = runner_.Run(context);
    } catch (const std::exception& e) {
      status = JobExceptionStatus(e);
    } catch (...) {
      status = absl::InternalError("the job failed with an unknown error");
    }
  }
  // A runner stopped by a cancel request reports it with the request's reason (a job that finished anyway is OK);
  // one stopped by the wall-time limit says so.
  if (context.timed_out() && !status.ok()) {
    const bool own = job->max_seconds() != options_.max_job_seconds;
    status = absl::DeadlineExceededError(absl::StrCat("the job ran past ", own ? "its token's" : "the daemon's",
                                                      " limit of ", job->max_seconds(), " s (",
                                                      own ? "job_seconds" : "--max-job-seconds", ") and was stopped"));
  } else if (job->cancel_requested() && !status.ok()) {
    status = absl::CancelledError(job->cancel_reason());
  }

  v1::Finished finished;
  for (const auto& [stage, seconds] : context.timings()) {
    v1::StageTiming* timing = finished.add_timings();
    timing->set_stage(stage);
    timing->set_seconds(seconds);
  }
  for (const std::string& warning : context.warnings()) finished.add_warnings(warning);
  finished.set_invoke_result_json(context.invoke_result());
  finished.set_queued_seconds(absl::ToDoubleSeconds(job->started_at() - job->submitted_at()));
  finished.set_run_seconds(absl::ToDoubleSeconds(absl::Now() - job->started_at()));
  std::vector<std::pair<std::string, double>> stages;
  for (const auto& t : finished.timings()) stages.emplace_back(t.stage(), t.seconds());
  const double queued_seconds = finished.queued_seconds(), run_seconds = finished.run_seconds();
  job->Finish(status, std::move(finished));
  const std::string state = status.ok() ? "succeeded"
                            : job->state() == v1::JOB_STATE_CANCELLED ? "cancelled"
                                                                       : "failed";
  DaemonMetrics::Global().JobFinished(state, queued_seconds, run_seconds, stages);
  Log(state == "failed" ? LogLevel::kWarning : LogLevel::kInfo, "job finished",
      {{"job", job->id()}, {"client", job->client_id()}, {"state", state},
       {"run_s", absl::StrFormat("%.2f", run_seconds)},
       {"code", absl::StatusCodeToString(status.code())},
       {"message", std::string(status.message().substr(0, 300))}});
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_.reset();
  }
  Forget(job->id());
  // An idle daemon's RSS is its weights: the blocks cached for the next step go back once nothing waits.
  if (queue_.size() == 0) engine::ReleaseCachedCpuMemory();
}

void JobManager::Forget(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  active_.erase(job_id);
}

void JobManager::PublishPositions() {
  const auto ordered = queue_.Ordered();
  const int length = static_cast<int>(ordered.size());
  for (int i = 0; i < length; ++i) ordered[i]->PublishPosition(i, length);
}

}  // namespace atelier::server
