// The one interface through which a job's extensions reach the engine. The plugin host implements it over the C ABI
// (host::JobHooks); the engine calls it at the places below and nowhere else, so "where can a plugin change a
// job" has one answer:
//
//   point              called from                                   WebUI / extension equivalent
//   ShapeJob           pipeline/generate.cc, PrepareGeneration        Script.process changing p (batch as frames)
//   OverrideSchedule   pipeline/generate.cc, PrepareGeneration        AnimateDiff's linear-beta alphas_cumprod
//   PassStarted        pipeline/generate.cc, before every pass        the pass a hook runs in (txt2img/img2img/hires)
//   InitLatent         pipeline/generate.cc, img2img, before noise    AnimateDiff's per-frame init latent (p.rng.next)
//   Sample             pipeline/generate.cc, around every pass        AnimateDiff's FreeInit (p.sample replaced)
//   BeforeModel        sampling/cfg_denoiser.cc, each evaluation     on_cfg_denoiser
//   CallModel          sampling/cfg_denoiser.cc, each UNet call       ControlNet's per-call residuals, AnimateDiff's
//                                                                     context windows and motion-module blocks
//   AfterModel         sampling/cfg_denoiser.cc, after the UNet      on_cfg_denoised
//   AfterCfg           sampling/cfg_denoiser.cc, after the CFG mix   on_cfg_after_cfg
//   InfotextAdditions  pipeline/generation_infotext.cc               extra_generation_params
//
// Everything runs on the executor thread, inside one job. A point an extension does not use (points()) costs
// nothing: the engine does not build its arguments.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/models/unet.h"

namespace atelier::engine {

// Which sampling pass runs.
enum class SamplingPass { kTxt2Img = 0, kImg2Img = 1, kHires = 2 };
// "txt2img", "img2img", "hires" (the names the progress events carry).
inline const char* SamplingPassName(SamplingPass pass) {
  switch (pass) {
    case SamplingPass::kImg2Img: return "img2img";
    case SamplingPass::kHires: return "hires";
    default: return "txt2img";
  }
}

struct PassInfo {
  SamplingPass pass = SamplingPass::kTxt2Img;
  int batch = 0, batches = 1;  // n_iter index and count
  int images = 1;              // rows of this batch (batch_size)
  int width = 0, height = 0;   // pixels of this pass
  int steps = 0;               // steps this pass's sampler runs
  // Inpainting "Only masked": the region of the init image this pass samples (x, y, width, height); 0 x 0: none.
  int crop_x = 0, crop_y = 0, crop_width = 0, crop_height = 0;
};

// The job's shape before seeds are drawn and prompts conditioned. An extension may change it: AnimateDiff makes the
// batch one video of `frames_per_video` frames. The engine validates the result as it validates a request.
struct JobShape {
  int batch_size = 1, n_iter = 1, steps = 20;
  int width = 0, height = 0;  // read-only: the size is the request's
  // > 0: every run of this many batch rows is one video (the UNet normalises them jointly; AnimateDiff v1).
  int frames_per_video = 0;
};

// Inputs of one CFG evaluation in WebUI's row layout: rows [0, cond_rows) conditional, the rest unconditional.
// A point changes a tensor by assigning a new one, never by writing into the given one (it may be a view of the
// sampler's state).
struct CfgDenoiserInputs {
  int sampling_step = 0, total_sampling_steps = 0, cond_rows = 0;
  at::Tensor x, sigma, text_cond, text_uncond, image_cond;
};

// One UNet call. The denoiser makes one per evaluation, or two (conditional rows, then unconditional ones) when
// the prompts' token counts differ; a model-call wrapper may split it further (windows of frames).
struct ModelCall {
  int sampling_step = 0, total_sampling_steps = 0;
  int cond_rows = 0;                 // rows [0, cond_rows) of this call are conditional
  at::Tensor x;                      // [rows, in_channels, h, w], scaled model input
  at::Tensor timesteps;              // [rows], fractional
  at::Tensor context;                // [rows, tokens, dim]
  // Added to the 12 skips and the middle block's output (ControlNet); undefined entries add nothing.
  std::array<at::Tensor, kUNetResiduals> residuals;
  UNetBlockHook block_hook;          // the 21 insertion points (motion modules); empty: none
  SelfAttentionHook attention_hook;  // every self-attention (reference attention); empty: none
  UNetBlockEndHook block_end_hook;   // every whole block's output; empty: none
  int frames_per_video = 0;          // see JobShape
  // int64 [rows] (CPU): the denoiser call's row each row is (a wrapper's subset of it); undefined: row i is row i.
  at::Tensor batch_rows;
};

// The image RNG of the running batch, as WebUI's p.rng.next(): the first draw is the batch's seeded initial noise
// [rows, 4, h, w], every later one the next per-image draw (what ancestral samplers add per step).
using NoiseDraw = std::function<absl::StatusOr<at::Tensor>()>;

// One sampling pass's outcome, as a Sample wrapper sees it.
struct SampledPass {
  at::Tensor latent;  // [rows, 4, h, w], UNet space
  bool interrupted = false;
};
// Runs the pass's sampler from `noise` (unit variance [rows, 4, h, w]; img2img: with the pass's init latent).
using SampleNext = std::function<absl::StatusOr<SampledPass>(const at::Tensor& noise)>;

// The rest of the chain after a wrapper: later extensions' wrappers, then the UNet. Returns eps [rows, 4, h, w].
using ModelCallNext = std::function<absl::StatusOr<at::Tensor>(ModelCall& call)>;

class JobExtension {
 public:
  // The points an extension uses; the engine skips the others.
  struct Points {
    bool shape = false, schedule = false, pass = false, cfg = false, model_call = false, infotext = false;
    bool init_latent = false, sample = false;
  };

  virtual ~JobExtension() = default;
  virtual Points points() const = 0;

  virtual absl::Status ShapeJob(JobShape& shape) { return absl::OkStatus(); }
  // alphas_cumprod [timesteps] float: replace it (same length) to sample on another noise schedule.
  virtual absl::Status OverrideSchedule(at::Tensor& alphas_cumprod) { return absl::OkStatus(); }
  virtual absl::Status PassStarted(const PassInfo& pass) { return absl::OkStatus(); }
  // img2img: the pass's init latent [rows, 4, h, w] before the sampler's noise is drawn; replace it (same shape) to
  // start each row from another latent. Draws taken from `next_noise` come before the sampler's own.
  virtual absl::Status InitLatent(const PassInfo& pass, at::Tensor& init_latent, const NoiseDraw& next_noise) {
    return absl::OkStatus();
  }
  // Wraps a pass's sampling: call `next` any number of times (FreeInit's iterations) and return the pass's latents.
  // `noise` is what the pass would start from; `alphas_cumprod` the schedule it samples on; `next_noise` continues
  // the batch's image RNG.
  virtual absl::StatusOr<SampledPass> Sample(const PassInfo& pass, const at::Tensor& noise,
                                             const at::Tensor& alphas_cumprod, const SampleNext& next,
                                             const NoiseDraw& next_noise) {
    return next(noise);
  }
  virtual absl::Status BeforeModel(CfgDenoiserInputs& inputs) { return absl::OkStatus(); }
  // Wraps one UNet call: call `next` (any number of times, on any rows) and return eps for the call's rows.
  virtual absl::StatusOr<at::Tensor> CallModel(ModelCall& call, const ModelCallNext& next) { return next(call); }
  // x: the per-row prediction (x0 for k-diffusion samplers, eps for timestep samplers).
  virtual absl::Status AfterModel(int sampling_step, int total_sampling_steps, int cond_rows, at::Tensor& x) {
    return absl::OkStatus();
  }
  virtual absl::Status AfterCfg(int sampling_step, int total_sampling_steps, at::Tensor& x) {
    return absl::OkStatus();
  }
  // Infotext keys (after the engine's own) for image `index` of the job.
  virtual void InfotextAdditions(int index, std::vector<std::pair<std::string, std::string>>& extra) const {}
};

}  // namespace atelier::engine
