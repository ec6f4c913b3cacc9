// The waiting jobs, ordered for fairness: clients take turns (round robin), each client's own jobs stay FIFO.
// A client with 50 queued jobs therefore delays a newcomer's single job by at most one of its own.
#pragma once

#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/job.h"

namespace atelier::server {

class JobQueue {
 public:
  explicit JobQueue(int max_queued) : max_queued_(max_queued) {}

  // RESOURCE_EXHAUSTED when max_queued jobs already wait; UNAVAILABLE after Close().
  absl::Status Push(std::shared_ptr<Job> job);
  // Waits for the next job in fair order; nullptr once the queue is closed or when Wake() was called (the
  // executor then runs its pending control tasks before taking a job).
  std::shared_ptr<Job> PopBlocking();
  // Makes a waiting (or the next) PopBlocking return nullptr once.
  void Wake();
  bool closed() const;
  // Removes a waiting job; false when it is not waiting.
  bool Remove(const std::string& job_id);
  // Refuses further pushes, wakes PopBlocking, and returns the jobs that were waiting (in order).
  std::vector<std::shared_ptr<Job>> Close();

  // Waiting jobs in the order they will run (index = position).
  std::vector<std::shared_ptr<Job>> Ordered() const;
  int size() const;
  int max_queued() const { return max_queued_; }

 private:
  std::vector<std::shared_ptr<Job>> OrderedLocked() const;

  const int max_queued_;
  mutable std::mutex mu_;
  std::condition_variable ready_;
  bool closed_ = false;
  bool woken_ = false;
  int size_ = 0;
  // Clients with waiting jobs, in turn order; the front client's first job runs next.
  std::list<std::string> turns_;
  std::map<std::string, std::deque<std::shared_ptr<Job>>> by_client_;
};

}  // namespace atelier::server
