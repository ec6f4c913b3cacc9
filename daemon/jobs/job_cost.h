// What a job will cost, before it is queued. Its work is counted per kind from its shape: text-encoder rows, UNet
// convolution work (model calls x rows x latent pixels), UNet self-attention work (the same with the pixels squared)
// and VAE work (decoded images x latent pixels, plus hires fix's image-space round trip), and the number of UNet
// calls (a fixed cost per call that dominates tiny models). Each kind has its own seconds-per-unit, learned from the
// stage timings of every job that finished on this device and model; sampling's three terms are separated by a
// least-squares fit over recent jobs of different shapes (priors hold the attention/convolution ratio at its FLOP
// count and the per-call cost at 0 until the shapes tell them apart). Until the first job has run there is no estimate (the wall-time limit
// still stops runaways).
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <optional>

#include "jobs/job_settings.h"

namespace atelier::jobs {

struct JobWork {
  double text = 0;       // prompt parts encoded (each AND part and the negative, per iteration and hires pass)
  double calls = 0;      // UNet calls, over both passes (what a call costs whatever its size: dispatch, small ops)
  double conv = 0;       // Σ model calls x rows per call x latent pixels, over both passes
  double attention = 0;  // Σ model calls x rows per call x latent pixels²
  double vae = 0;        // decoded images x latent pixels (+ decode, resize and encode before an image-space hires)
};

// The seconds a finished job spent in each estimated stage.
struct StageSeconds {
  double text = 0;
  double sampling = 0;
  double vae = 0;  // the decode stage and hires fix's upscale stage
};

JobWork EstimateWork(const JobSettings& settings);

class CostModel {
 public:
  // The rates belong to one model (`model`: any identity of the loaded weights, e.g. their address); another model
  // has no estimate until a job has run on it, and its first job starts the rates afresh.

  // Seconds the job should take on `model`, once calibrated there. Thread-safe.
  std::optional<double> EstimateSeconds(const JobWork& work, const void* model = nullptr) const;
  // A job of `work` took `seconds` per stage on `model`: updates the rates. Thread-safe.
  void Observe(const JobWork& work, const StageSeconds& seconds, const void* model = nullptr);

  // The current rates (seconds per unit), for reports and tests; all 0 before the first observation.
  struct Rates {
    double text = 0, call = 0, conv = 0, attention = 0, vae = 0;
  };
  Rates rates() const;

 private:
  static constexpr std::size_t kWindow = 32;  // recent sampling observations in the fit
  struct Sample {
    double calls = 0, conv = 0, attention = 0, seconds = 0;
  };
  void FitSampling();  // with mu_ held

  mutable std::mutex mu_;
  const void* model_ = nullptr;
  Rates rates_;
  std::array<Sample, kWindow> samples_{};
  std::size_t sample_count_ = 0;  // observations so far (the ring holds the last kWindow)
};

}  // namespace atelier::jobs
