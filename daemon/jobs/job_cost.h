// What a job will cost, before it is queued: its work in "UNet pixel evaluations" from its shape (latent pixels,
// their square for attention, model calls per step, rows per call, hires fix's second pass, the VAE decodes), and
// seconds from the device's measured speed: every finished job teaches the model how long a unit takes here. Until
// the first job has run there is no estimate (the wall-time limit still stops runaways).
#pragma once

#include <mutex>
#include <optional>

#include "jobs/job_settings.h"

namespace atelier::jobs {

// The work of a job's sampling and decoding, in arbitrary units proportional to its FLOPs on one device.
double EstimateWork(const JobSettings& settings);

class CostModel {
 public:
  // Seconds the job of `work` units should take, once calibrated. Thread-safe.
  std::optional<double> EstimateSeconds(double work) const;
  // A job of `work` units took `seconds`: updates the device's speed (an exponential average). Thread-safe.
  void Observe(double work, double seconds);

 private:
  mutable std::mutex mu_;
  double seconds_per_unit_ = 0;  // 0: not calibrated
};

}  // namespace atelier::jobs
