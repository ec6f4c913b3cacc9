#include "server/job_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace atelier::server {

absl::Status JobQueue::Push(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return absl::UnavailableError("the daemon is shutting down and accepts no new jobs");
    if (size_ >= max_queued_) {
      return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", size_, " of ", max_queued_,
                                                       " jobs waiting); retry later or raise --max-queue"));
    }
    auto& jobs = by_client_[job->client_id()];
    if (jobs.empty()) turns_.push_back(job->client_id());
    jobs.push_back(std::move(job));
    ++size_;
  }
  ready_.notify_one();
  return absl::OkStatus();
}

std::shared_ptr<Job> JobQueue::PopBlocking() {
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait(lock, [this] { return closed_ || woken_ || size_ > 0; });
  if (closed_) return nullptr;
  if (woken_) {
    woken_ = false;
    return nullptr;
  }
  const std::string client = turns_.front();
  turns_.pop_front();
  auto& jobs = by_client_[client];
  std::shared_ptr<Job> job = std::move(jobs.front());
  jobs.pop_front();
  if (jobs.empty()) {
    by_client_.erase(client);
  } else {
    turns_.push_back(client);  // its next job waits for everyone else's turn
  }
  --size_;
  return job;
}

void JobQueue::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  ready_.notify_all();
}

bool JobQueue::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

bool JobQueue::Remove(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = by_client_.begin(); it != by_client_.end(); ++it) {
    auto& jobs = it->second;
    auto found = std::find_if(jobs.begin(), jobs.end(), [&](const auto& j) { return j->id() == job_id; });
    if (found == jobs.end()) continue;
    jobs.erase(found);
    --size_;
    if (jobs.empty()) {
      turns_.remove(it->first);
      by_client_.erase(it);
    }
    return true;
  }
  return false;
}

std::vector<std::shared_ptr<Job>> JobQueue::Close() {
  std::vector<std::shared_ptr<Job>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    waiting = OrderedLocked();
    turns_.clear();
    by_client_.clear();
    size_ = 0;
  }
  ready_.notify_all();
  return waiting;
}

std::vector<std::shared_ptr<Job>> JobQueue::Ordered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return OrderedLocked();
}

std::vector<std::shared_ptr<Job>> JobQueue::OrderedLocked() const {
  // Round k takes each client's k-th job, clients in turn order: exactly the order PopBlocking produces.
  std::vector<std::shared_ptr<Job>> order;
  order.reserve(size_);
  for (std::size_t round = 0; order.size() < static_cast<std::size_t>(size_); ++round) {
    for (const std::string& client : turns_) {
      const auto& jobs = by_client_.at(client);
      if (round < jobs.size()) order.push_back(jobs[round]);
    }
  }
  return order;
}

int JobQueue::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_;
}

}  // namespace atelier::server
