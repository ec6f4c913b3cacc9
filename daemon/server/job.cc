#include "server/job.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace atelier::server {

Job::Job(std::string id, std::string client_id, v1::GenerateRequest request)
    : id_(std::move(id)),
      client_id_(std::move(client_id)),
      request_(std::move(request)),
      submitted_at_(absl::Now()) {}

v1::JobState Job::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

absl::Time Job::started_at() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_at_;
}

void Job::MarkRunning() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == v1::JOB_STATE_QUEUED) {
    state_ = v1::JOB_STATE_RUNNING;
    started_at_ = absl::Now();
  }
}

std::uint64_t Job::StampLocked(v1::GenerateEvent& event) {
  event.set_job_id(id_);
  event.set_sequence(next_sequence_);
  event.set_published_unix_us(absl::ToUnixMicros(absl::Now()));
  return next_sequence_++;
}

void Job::PublishReliable(v1::GenerateEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    StampLocked(event);
    reliable_.push_back(std::make_shared<const v1::GenerateEvent>(std::move(event)));
  }
  NotifyObservers();
}

void Job::PublishLossy(LossySlot slot, v1::GenerateEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    StampLocked(event);
    auto shared = std::make_shared<const v1::GenerateEvent>(std::move(event));
    lossy_[static_cast<int>(slot)] = shared;
    // A preview carries progress too: it supersedes an older progress-only event.
    if (slot == LossySlot::kPreview) lossy_[static_cast<int>(LossySlot::kProgress)].reset();
  }
  NotifyObservers();
}

void Job::PublishPosition(int position, int queue_length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || state_ != v1::JOB_STATE_QUEUED) return;
    if (position == last_position_ && queue_length == last_queue_length_) return;
    last_position_ = position;
    last_queue_length_ = queue_length;
  }
  v1::GenerateEvent event;
  event.mutable_queued()->set_position(position);
  event.mutable_queued()->set_queue_length(queue_length);
  PublishLossy(LossySlot::kQueue, std::move(event));
}

bool Job::Finish(const absl::Status& status, v1::Finished finished) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return false;
    v1::JobState state = v1::JOB_STATE_SUCCEEDED;
    // Stopped by Cancel, a disconnect or shutdown is CANCELLED (common.proto), also when the stream's status says
    // UNAVAILABLE (a queued job at shutdown: the client may retry elsewhere).
    if (status.code() == absl::StatusCode::kCancelled ||
        (cancel_requested() && status.code() == absl::StatusCode::kUnavailable)) {
      state = v1::JOB_STATE_CANCELLED;
    } else if (!status.ok()) {
      state = v1::JOB_STATE_FAILED;
    }
    state_ = state;
    finished.set_state(state);
    finished.set_message(std::string(status.message()));
    v1::GenerateEvent event;
    *event.mutable_finished() = std::move(finished);
    StampLocked(event);
    reliable_.push_back(std::make_shared<const v1::GenerateEvent>(std::move(event)));
    finished_ = true;
    final_status_ = status;
  }
  NotifyObservers();
  return true;
}

bool Job::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

std::shared_ptr<const v1::GenerateEvent> Job::Next(EventCursor& cursor, bool* ended,
                                                   absl::Status* final_status) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<const v1::GenerateEvent> best;
  bool best_is_reliable = false;
  if (cursor.next_reliable < reliable_.size()) {
    best = reliable_[cursor.next_reliable];
    best_is_reliable = true;
  }
  for (const auto& lossy : lossy_) {
    if (lossy == nullptr || lossy->sequence() <= cursor.last_sequence) continue;
    if (best == nullptr || lossy->sequence() < best->sequence()) {
      best = lossy;
      best_is_reliable = false;
    }
  }
  if (best == nullptr) {
    if (finished_) {
      *ended = true;
      *final_status = final_status_;
    }
    return nullptr;
  }
  if (best_is_reliable) ++cursor.next_reliable;
  // Everything between the last sent and this one was superseded and will never be sent to this cursor.
  cursor.dropped += best->sequence() - cursor.last_sequence - 1;
  cursor.last_sequence = best->sequence();
  return best;
}

EventCursor Job::LiveCursor() const {
  std::lock_guard<std::mutex> lock(mu_);
  EventCursor cursor;
  cursor.next_reliable = reliable_.size();
  // Lossy events older than the live edge are stale; reliable ones were skipped on purpose (not "dropped").
  cursor.last_sequence = reliable_.empty() ? 0 : reliable_.back()->sequence();
  return cursor;
}

void Job::AddObserver(std::weak_ptr<JobObserver> observer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    observers_.erase(std::remove_if(observers_.begin(), observers_.end(),
                                    [](const std::weak_ptr<JobObserver>& o) { return o.expired(); }),
                     observers_.end());
    observers_.push_back(std::move(observer));
  }
  NotifyObservers();
}

int Job::ObserverCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::count_if(observers_.begin(), observers_.end(),
                                        [](const std::weak_ptr<JobObserver>& o) { return !o.expired(); }));
}

void Job::RequestCancel(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancel_reason_.empty()) cancel_reason_ = reason;
  }
  cancel_requested_.store(true, std::memory_order_release);
}

std::string Job::cancel_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancel_reason_;
}

void Job::NotifyObservers() {
  std::vector<std::shared_ptr<JobObserver>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& weak : observers_) {
      if (auto observer = weak.lock()) live.push_back(std::move(observer));
    }
  }
  for (const auto& observer : live) observer->OnJobUpdated();
}

}  // namespace atelier::server
