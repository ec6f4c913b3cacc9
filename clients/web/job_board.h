// What the gateway knows of the jobs it watches (its own, and with --watch-all everyone's): the state behind
// WebUI's /progress, and the live events the page streams (server-sent events), fanned out to every subscriber.
// Thread-safe: job threads publish, HTTP threads read and subscribe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "atelier/v1/generation.pb.h"
#include "webui_json.h"

namespace atelier::web {

// One subscriber's queue of SSE messages ("event: ...\ndata: ...\n\n"). A slow reader loses the oldest previews,
// never results or the end of a job.
class Subscription {
 public:
  // Waits up to `timeout_ms` for messages; "" on timeout. Returns all queued messages joined.
  std::string Next(int timeout_ms);
  void Push(std::string message, bool droppable);
  void Close();
  bool closed() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, bool>> queue_;
  bool closed_ = false;
};

class JobBoard {
 public:
  // A job the gateway submitted (`mine`) or watches: its events, in order, as the daemon sent them.
  void Publish(const v1::GenerateEvent& event, const std::string& prompt, bool mine);
  // A job that ended without a Finished event (the stream broke): the page hears it ended.
  void Ended(const std::string& job_id, const std::string& state, const std::string& message);

  // WebUI's /progress: the newest running job this gateway submitted, else the newest it watches.
  ProgressState Progress() const;
  // The job /interrupt and /skip act on (as Progress picks it); empty when none runs.
  std::string CurrentJob() const;
  void MarkInterrupted(const std::string& job_id, bool skipped);

  // A new subscriber first gets every active job's latest state (so a page opened mid-job shows it).
  std::shared_ptr<Subscription> Subscribe();
  void Unsubscribe(const std::shared_ptr<Subscription>& subscription);
  // Tells every subscriber the daemon is reachable or not.
  void DaemonState(bool reachable, const std::string& message);
  bool Tracks(const std::string& job_id) const;

 private:
  struct Tracked {
    ProgressState progress;
    bool mine = false;
    bool finished = false;
    std::int64_t order = 0;
    std::string prompt;
    v1::GenerateEvent last_progress;  // replayed to new subscribers
  };
  void Broadcast(const std::string& message, bool droppable);  // mu_ held

  mutable std::mutex mu_;
  std::map<std::string, Tracked> jobs_;
  std::deque<std::string> finished_order_;  // forget old finished jobs
  std::int64_t counter_ = 0;
  std::map<Subscription*, std::shared_ptr<Subscription>> subscribers_;
  std::string daemon_state_message_;
};

}  // namespace atelier::web
