#include "server/daemon_metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace atelier::server {
namespace {

// Label values are ours (states, codes, stage and plugin names) but escaped anyway, as the format asks.
std::string Label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

void Header(std::string& out, const char* name, const char* type, const char* help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

std::string Number(double x) { return absl::StrFormat("%.9g", x); }

void AppendHistogram(std::string& out, const char* name, const char* help, const DaemonMetrics::Histogram& h) {
  Header(out, name, "histogram", help);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < DaemonMetrics::kBuckets.size(); ++i) {
    cumulative += h.counts[i];
    absl::StrAppend(&out, name, "_bucket{le=\"", Number(DaemonMetrics::kBuckets[i]), "\"} ", cumulative, "\n");
  }
  cumulative += h.counts.back();
  absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", cumulative, "\n", name, "_sum ", Number(h.sum), "\n", name,
                  "_count ", h.count, "\n");
}

template <typename Map>
void AppendLabelled(std::string& out, const char* name, const char* type, const char* help, const char* label,
                    const Map& values) {
  Header(out, name, type, help);
  for (const auto& [key, value] : values) {
    absl::StrAppend(&out, name, "{", label, "=\"", Label(key), "\"} ", Number(static_cast<double>(value)), "\n");
  }
}

}  // namespace

DaemonMetrics& DaemonMetrics::Global() {
  static DaemonMetrics* metrics = new DaemonMetrics();  // never destroyed: streams may report during exit
  return *metrics;
}

void DaemonMetrics::Histogram::Add(double value) {
  std::size_t i = 0;
  while (i < kBuckets.size() && value > kBuckets[i]) ++i;
  ++counts[i];
  sum += value;
  ++count;
}

void DaemonMetrics::JobFinished(const std::string& state, double queued_seconds, double run_seconds,
                                const std::vector<std::pair<std::string, double>>& stage_seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.jobs[state];
  data_.queue_seconds.Add(queued_seconds);
  data_.run_seconds.Add(run_seconds);
  for (const auto& [stage, seconds] : stage_seconds) {
    data_.stage_seconds[stage] += seconds;
    ++data_.stage_runs[stage];
  }
}

void DaemonMetrics::Refused(const std::string& code) {
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.refused[code];
}

void DaemonMetrics::EventSent(const std::string& kind, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.events_sent[kind];
  data_.bytes_sent[kind] += bytes;
}

void DaemonMetrics::StreamOpened() {
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.streams_open;
}

void DaemonMetrics::StreamClosed() {
  std::lock_guard<std::mutex> lock(mu_);
  --data_.streams_open;
}

DaemonMetrics::Snapshot DaemonMetrics::Take() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

std::string RenderPrometheus(const DaemonMetrics::Snapshot& s, const LiveGauges& live) {
  std::string out;
  Header(out, "atelier_uptime_seconds", "gauge", "Seconds since the daemon started.");
  absl::StrAppend(&out, "atelier_uptime_seconds ", Number(live.uptime_seconds), "\n");
  Header(out, "atelier_queue_depth", "gauge", "Jobs waiting for the executor.");
  absl::StrAppend(&out, "atelier_queue_depth ", live.queue_depth, "\n");
  Header(out, "atelier_jobs_running", "gauge", "Jobs running on the device (0 or 1).");
  absl::StrAppend(&out, "atelier_jobs_running ", live.running, "\n");
  AppendLabelled(out, "atelier_jobs_total", "counter", "Jobs that ended, by final state.", "state", s.jobs);
  AppendLabelled(out, "atelier_requests_refused_total", "counter",
                 "Calls refused before they made a job, by gRPC status code.", "code", s.refused);
  AppendHistogram(out, "atelier_job_run_seconds", "Seconds a job ran on the executor.", s.run_seconds);
  AppendHistogram(out, "atelier_job_queue_seconds", "Seconds a job waited in the queue.", s.queue_seconds);
  AppendLabelled(out, "atelier_stage_seconds_total", "counter", "Seconds spent per pipeline stage.", "stage",
                 s.stage_seconds);
  AppendLabelled(out, "atelier_stage_runs_total", "counter", "Jobs that ran each stage.", "stage", s.stage_runs);
  AppendLabelled(out, "atelier_events_sent_total", "counter", "Stream events written to clients, by kind.", "kind",
                 s.events_sent);
  AppendLabelled(out, "atelier_bytes_sent_total", "counter",
                 "Bytes of stream events written to clients, by kind (kind=\"preview\": live previews).", "kind",
                 s.bytes_sent);
  Header(out, "atelier_streams_open", "gauge", "Generate, Watch, Upscale and Invoke streams open now.");
  absl::StrAppend(&out, "atelier_streams_open ", s.streams_open, "\n");
  Header(out, "atelier_process_resident_bytes", "gauge", "The daemon's resident memory (RSS).");
  absl::StrAppend(&out, "atelier_process_resident_bytes ", live.process_rss_bytes, "\n");
  Header(out, "atelier_system_available_bytes", "gauge", "Memory the system has available.");
  absl::StrAppend(&out, "atelier_system_available_bytes ", live.system_available_bytes, "\n");
  Header(out, "atelier_device_memory_total_bytes", "gauge", "GPU memory in total (0 on the CPU).");
  absl::StrAppend(&out, "atelier_device_memory_total_bytes ", live.device_total_bytes, "\n");
  Header(out, "atelier_device_memory_free_bytes", "gauge", "GPU memory free (0 on the CPU).");
  absl::StrAppend(&out, "atelier_device_memory_free_bytes ", live.device_free_bytes, "\n");
  return out;
}

}  // namespace atelier::server
