// Per-client quotas: how many jobs one client (a token's name, or without tokens the client's host) may have queued
// and running, how much work one job may ask for and how much work per minute the client may submit, and how long
// its jobs may run. The daemon's flags set the defaults; a token's line may set its own.
//
// Work is counted as WebUI users reckon a job's size: megapixel-steps, Σ over passes of width x height / 10^6 x
// steps x images (batch_size x n_iter, or an AnimateDiff video's frames). SD1.5 at 512x512, 20 steps is 5.2.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace atelier::server {

struct ClientLimits {
  std::optional<int> jobs;                 // queued + running at once
  std::optional<int> queued;               // waiting at once
  std::optional<double> work_per_job;      // megapixel-steps
  std::optional<double> work_per_minute;   // megapixel-steps submitted over the last 60 s
  std::optional<double> job_seconds;       // wall time of one running job

  // Fields unset here take `defaults`' values.
  ClientLimits Over(const ClientLimits& defaults) const;
};

// The admission side of the quotas: what each client has in the daemon and submitted recently. Thread-safe.
class ClientQuotas {
 public:
  // Counts a job of `work` for `client` when `limits` allow it (`queued_now` / `active_now`: the client's jobs
  // waiting / queued or running now); otherwise RESOURCE_EXHAUSTED naming the limit, its value and what to do.
  absl::Status Admit(const std::string& client, const ClientLimits& limits, double work, int queued_now,
                     int active_now, absl::Time now = absl::Now());
  // A job Admit counted was refused after all (e.g. the queue was full): its work no longer counts.
  void Refund(const std::string& client, double work);
  // Work `client` submitted over the minute before `now` (what work_per_minute compares).
  double RecentWork(const std::string& client, absl::Time now = absl::Now());

 private:
  void Expire(std::deque<std::pair<absl::Time, double>>& window, absl::Time now);

  std::mutex mu_;
  std::map<std::string, std::deque<std::pair<absl::Time, double>>> recent_;
};

}  // namespace atelier::server
