// What the daemon has done since it started, for Daemon.GetInfo and the Prometheus endpoint (--metrics-listen):
// jobs by outcome, refusals by status code, job run and queue-wait histograms, time per pipeline stage, bytes and
// events sent to streams. One process-wide instance (as Prometheus client libraries keep one registry); every
// method is thread-safe and cheap (a mutex held for a few additions).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace atelier::server {

class DaemonMetrics {
 public:
  static DaemonMetrics& Global();

  // Upper bounds (seconds) of the duration histograms' buckets; +Inf is implied.
  static constexpr std::array<double, 12> kBuckets = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800};

  void JobFinished(const std::string& state, double queued_seconds, double run_seconds,
                   const std::vector<std::pair<std::string, double>>& stage_seconds);
  // A call ended before it made a job (admission): `code` is the gRPC status code's name, e.g. "RESOURCE_EXHAUSTED".
  void Refused(const std::string& code);
  // An event was written to a stream: its kind ("progress", "result", ...) and size; a progress event's preview
  // image is counted again as kind "preview".
  void EventSent(const std::string& kind, std::size_t bytes);
  void StreamOpened();
  void StreamClosed();

  struct Histogram {
    std::array<std::uint64_t, kBuckets.size() + 1> counts{};  // per bucket (not cumulative); last: +Inf
    double sum = 0;
    std::uint64_t count = 0;
    void Add(double value);
  };
  struct Snapshot {
    std::map<std::string, std::uint64_t> jobs;          // by final state: "succeeded", "failed", "cancelled"
    std::map<std::string, std::uint64_t> refused;       // by status code
    std::map<std::string, double> stage_seconds;        // Σ seconds per stage
    std::map<std::string, std::uint64_t> stage_runs;    // jobs that ran the stage
    std::map<std::string, std::uint64_t> events_sent;   // by kind
    std::map<std::string, std::uint64_t> bytes_sent;    // by kind
    Histogram run_seconds, queue_seconds;
    std::int64_t streams_open = 0;
  };
  Snapshot Take() const;

 private:
  mutable std::mutex mu_;
  Snapshot data_;
};

// The Prometheus text exposition of `snapshot` and the live gauges.
struct LiveGauges {
  double uptime_seconds = 0;
  int queue_depth = 0;
  int running = 0;
  std::int64_t process_rss_bytes = 0;
  std::int64_t system_available_bytes = 0;
  std::int64_t device_total_bytes = 0;
  std::int64_t device_free_bytes = 0;
};
std::string RenderPrometheus(const DaemonMetrics::Snapshot& snapshot, const LiveGauges& live);

}  // namespace atelier::server
