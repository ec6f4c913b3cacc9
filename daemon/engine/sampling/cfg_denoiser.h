// WebUI's CFGDenoiser over k-diffusion's CompVisDenoiser: one batched model call per evaluation with the
// conditional rows first (each image once per AND part) and the unconditional rows last, then the CFG mix
// uncond + sum_k w_k * scale * (cond_k - uncond). Also the plugin hook points around the call, the per-step
// NaN check, progress reporting and interruption. The job's extension (engine/extension/job_extension.h) is called
// here at its CFG points and around every UNet call.
//
// Samplers call Denoise (k-diffusion: x0 prediction at a noise level sigma) or PredictEps (timestep samplers:
// the CFG-mixed eps at a timestep). Both throw SamplingStopped when the job was interrupted or failed; the
// sampler's entry point catches it (see samplers.h), so sampler bodies read like the reference code.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/extension/job_extension.h"

namespace atelier::engine {

class ModelSchedule;

// eps = model(call.x, call.timesteps, call.context) for a batch of rows: the UNet with the call's residuals, block
// hook and frames per video.
using EpsModel = ModelCallNext;

// A prompt's conditioning over the steps (WebUI's ScheduledPromptConditioning list): at denoiser call k the
// first entry with k <= end_at_step is used, and the first entry when k is past them all (as WebUI does). A
// single entry with a large end_at_step is a fixed prompt. end_at_step and tensors have the same, non-zero size.
struct ScheduledCond {
  std::vector<int> end_at_step;
  std::vector<at::Tensor> tensors;  // [tokens, dim] each
  static ScheduledCond Fixed(const at::Tensor& tensor);
  const at::Tensor& At(int call) const;
};

struct WeightedCond {
  ScheduledCond cond;
  double weight = 1.0;  // AND weight
};

struct CfgConditioning {
  std::vector<std::vector<WeightedCond>> cond;  // per image: its AND parts (at least one)
  std::vector<ScheduledCond> uncond;             // per image
  at::Tensor image_cond;  // [images, c, h, w] concatenated to the UNet input (inpainting models), or undefined
};

// One callback per sampler step (WebUI's sampler callback).
struct SamplingProgress {
  int step = 0;             // 0-based step index as the sampler reports it
  int total_steps = 0;      // steps the sampler will report
  int model_calls = 0;      // denoiser evaluations so far
  double sigma = 0;         // 0 for timestep samplers
  const at::Tensor* x = nullptr;         // the latent the step started from
  const at::Tensor* denoised = nullptr;  // the CFG-mixed x0 estimate
  const at::Tensor* preview = nullptr;   // x0 of each image's first conditional row (WebUI's live preview)
};
using ProgressCallback = std::function<void(const SamplingProgress&)>;

// Thrown through sampler bodies to their entry point; never escapes the engine.
struct SamplingStopped {
  absl::Status status;  // OK when interrupted (the caller keeps the last x0), else the error
};

struct CfgDenoiserOptions {
  double cfg_scale = 7.0;
  // WebUI's sampling-step bookkeeping for hooks and progress: steps requested, and whether the sampler evaluates
  // twice per step (prompt-editing schedules count every call).
  int total_sampling_steps = 0;
  // Polled before every evaluation; true -> stop there and keep the last x0. Must be cheap (an atomic read).
  std::function<bool()> interrupt;
  JobExtension* extension = nullptr;  // may be null
  bool check_nans = true;
  // k-diffusion's quantize (WebUI option enable_quantization): sigma -> the nearest integer timestep.
  bool quantize = false;
  // Inpainting (WebUI's p.mask / p.init_latent): where latent_keep is 1 the original latent is kept. k-diffusion
  // samplers blend the CFG-mixed x0; timestep samplers blend x before the model (mask_before_denoising).
  at::Tensor latent_keep;  // [1 or images, 1 or C, h, w]
  at::Tensor init_latent;  // [images, C, h, w]
};

class CfgDenoiser {
 public:
  // `schedule` gives sigma -> t and c_in (it outlives the denoiser). Conditioning rows must have one entry per
  // image; x passed to Denoise has one row per image.
  CfgDenoiser(EpsModel model, const ModelSchedule* schedule, CfgConditioning conditioning, CfgDenoiserOptions options);

  // k-diffusion model: the CFG-mixed x0 of x [images, c, h, w] at noise level sigma.
  at::Tensor Denoise(const at::Tensor& x, double sigma);
  // Timestep samplers: the CFG-mixed eps at timestep t (x not scaled). The unconditional eps of the call is kept
  // for DDIM CFG++ (last_uncond_eps).
  at::Tensor PredictEps(const at::Tensor& x, double t);

  // The CFG scale is multiplied by this (DDIM CFG++ maps [0, 12.5] to [0, 1]).
  void set_cfg_scale_multiplier(double m) { scale_multiplier_ = m; }
  const at::Tensor& last_uncond_eps() const { return last_uncond_; }
  // x0 of each image's first conditional row at the last evaluation (what an interrupted job returns).
  const at::Tensor& last_preview() const { return last_preview_; }
  int model_calls() const { return calls_; }
  int images() const { return images_; }

  // The sampler reports its step (WebUI's callback): updates the sampling step the hooks see and calls `progress`.
  void ReportStep(int step, int total_steps, double sigma, const at::Tensor& x, const at::Tensor& denoised);
  void set_progress(ProgressCallback progress) { progress_ = std::move(progress); }

  // Throws SamplingStopped{OK} when interrupted.
  void CheckInterrupt() const;

 private:
  // One evaluation: rows in WebUI's layout -> per-row model outputs combined; `predict_x0` selects the
  // CompVisDenoiser scaling (x0) or the raw eps of the timestep denoiser.
  at::Tensor Evaluate(const at::Tensor& x, double sigma_or_t, bool predict_x0);
  // Inpainting: latent where the keep-mask is 0, the original where it is 1.
  at::Tensor Blend(const at::Tensor& latent) const;

  EpsModel model_;
  const ModelSchedule* schedule_;
  CfgConditioning conditioning_;
  CfgDenoiserOptions options_;
  int images_ = 0, cond_rows_ = 0;
  std::vector<int> first_cond_row_;  // per image
  std::vector<double> alphas_;       // alphas_cumprod, for the timestep samplers' x0 preview
  double scale_multiplier_ = 1.0;
  int calls_ = 0, sampling_step_ = 0;
  at::Tensor last_uncond_, last_preview_;
  // Built on the first evaluation and when a prompt-editing schedule switches tensors.
  std::vector<const at::TensorImpl*> context_selection_;
  at::Tensor row_index_, first_row_index_, text_cond_, text_uncond_, text_both_;
  bool single_parts_ = false;  // every image has one AND part, all with the same weight
  ProgressCallback progress_;
};

}  // namespace atelier::engine
