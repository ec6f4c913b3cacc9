// A generation job: its request, control flags, and its event log shared by every stream attached to it.
//
// Events are of two kinds. Reliable events (started, frame, result, artifact, finished) are appended to a log and
// every stream sends all of them, in order. Lossy events (queue position, progress, preview) live in one slot per
// kind holding only the latest; a stream that reads slower than the job runs skips superseded ones. Every event
// gets the next per-job sequence number, and streams send in sequence order, so a gap means skipped lossy events.
// Memory per stream is therefore one event pointer, whatever the client's speed; the log itself is bounded by the
// job's own outputs.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "atelier/v1/generation.pb.h"

namespace atelier::server {

namespace v1 = ::atelier::v1;

// Lossy event kinds, one slot each.
enum class LossySlot : int { kQueue = 0, kProgress = 1, kPreview = 2 };
inline constexpr int kLossySlotCount = 3;

// Something attached to a job (a stream) that wants to hear when it has new events or ended.
class JobObserver {
 public:
  virtual ~JobObserver() = default;
  // Called from any thread, never with the job's lock held.
  virtual void OnJobUpdated() = 0;
};

// A stream's position in a job's events.
struct EventCursor {
  std::size_t next_reliable = 0;
  std::uint64_t last_sequence = 0;
  std::uint64_t dropped = 0;  // lossy events skipped
};

// What a runner made of a request when it was admitted (its parsed settings), handed back when the job runs, so
// a request is parsed and checked once.
class PreparedJob {
 public:
  virtual ~PreparedJob() = default;
  // The runner's estimate of the job's run time on this device, when it has one (see jobs/job_cost.h).
  virtual std::optional<double> estimated_seconds() const { return std::nullopt; }
  // The job's size for quotas, in megapixel-steps (client_quotas.h); 0 when it has no sampling.
  virtual double quota_work() const { return 0; }
};

class Job {
 public:
  Job(std::string id, std::string client_id, v1::GenerateRequest request);

  const std::string& id() const { return id_; }
  const std::string& client_id() const { return client_id_; }
  const v1::GenerateRequest& request() const { return request_; }
  // The runner's parse of the request (may be null); set before the job is queued, read-only after.
  const PreparedJob* prepared() const { return prepared_.get(); }
  void set_prepared(std::shared_ptr<const PreparedJob> prepared) { prepared_ = std::move(prepared); }
  absl::Time submitted_at() const { return submitted_at_; }
  // Whose quota the job counts against and who may cancel it (caller.h); set before the job is queued.
  const std::string& owner() const { return owner_; }
  void set_owner(std::string owner) { owner_ = std::move(owner); }
  // The submitter's own wall-time limit (seconds; 0: only the daemon's); set before the job is queued.
  double max_seconds() const { return max_seconds_; }
  void set_max_seconds(double seconds) { max_seconds_ = seconds; }

  v1::JobState state() const;
  absl::Time started_at() const;
  // Called by the executor when it starts the job.
  void MarkRunning();

  // ---- Events (any thread) ----
  void PublishReliable(v1::GenerateEvent event);
  void PublishLossy(LossySlot slot, v1::GenerateEvent event);
  // Publishes the queue position when it changed since the last one.
  void PublishPosition(int position, int queue_length);
  // Ends the job: appends `finished` (with the state derived from `status`), then every stream ends with `status`
  // after sending what it still has. Only the first call counts; returns false for later ones.
  bool Finish(const absl::Status& status, v1::Finished finished);
  bool finished() const;

  // The next event for `cursor`, or nullptr. When nullptr and the job ended with nothing left for this cursor,
  // sets *ended and *final_status.
  std::shared_ptr<const v1::GenerateEvent> Next(EventCursor& cursor, bool* ended, absl::Status* final_status) const;
  // A cursor that starts at the live edge (no replay of earlier reliable events).
  EventCursor LiveCursor() const;

  // ---- Observers ----
  void AddObserver(std::weak_ptr<JobObserver> observer);
  int ObserverCount() const;

  // ---- Control (any thread) ----
  // Records the first reason; the job stops at its next step boundary.
  void RequestCancel(const std::string& reason);
  bool cancel_requested() const { return cancel_requested_.load(std::memory_order_acquire); }
  std::string cancel_reason() const;
  void RequestSkip() { skip_requested_.store(true, std::memory_order_release); }
  // True once per Skip request.
  bool TakeSkip() { return skip_requested_.exchange(false, std::memory_order_acq_rel); }

  // Overall progress 0..1 (for ListJobs).
  void set_progress(float fraction) { progress_.store(fraction, std::memory_order_relaxed); }
  float progress() const { return progress_.load(std::memory_order_relaxed); }

 private:
  void NotifyObservers();
  std::uint64_t StampLocked(v1::GenerateEvent& event);

  const std::string id_;
  const std::string client_id_;
  const v1::GenerateRequest request_;
  std::shared_ptr<const PreparedJob> prepared_;
  std::string owner_;
  double max_seconds_ = 0;
  const absl::Time submitted_at_;

  std::atomic<bool> cancel_requested_{false};
  std::atomic<bool> skip_requested_{false};
  std::atomic<float> progress_{0.0f};

  mutable std::mutex mu_;
  v1::JobState state_ = v1::JOB_STATE_QUEUED;
  absl::Time started_at_ = absl::InfinitePast();
  std::string cancel_reason_;
  std::uint64_t next_sequence_ = 1;
  std::vector<std::shared_ptr<const v1::GenerateEvent>> reliable_;
  std::array<std::shared_ptr<const v1::GenerateEvent>, kLossySlotCount> lossy_;
  int last_position_ = -1;
  int last_queue_length_ = -1;
  bool finished_ = false;
  absl::Status final_status_;
  std::vector<std::weak_ptr<JobObserver>> observers_;
};

}  // namespace atelier::server
