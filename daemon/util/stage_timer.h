// Measures the wall time of a stage of a job ("text", "sampling", "decode", a plugin's name, ...) and reports it
// when the timer goes out of scope. The one stage timer of the daemon: the engine reports through
// GenerationControl::timing, the job layer into the job's events.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <utility>

namespace atelier {

using StageReport = std::function<void(const std::string& stage, double seconds)>;

class StageTimer {
 public:
  // An empty `report` measures nothing.
  StageTimer(StageReport report, std::string stage)
      : report_(std::move(report)), stage_(std::move(stage)), start_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    if (report_) report_(stage_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

 private:
  StageReport report_;
  std::string stage_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace atelier
