// WebUI's txt2img and img2img for a loaded SD1.x checkpoint (processing.py process_images), in three parts a job
// layer can drive one by one:
//   PrepareGeneration  validate, let the extension shape the job, fix the per-image seeds, condition the prompts
//                      once (prompt-editing schedules, AND), and prepare img2img / inpainting / hires fix;
//   SampleBatch        one batch: its seeded noise, the sampling pass over the CFG denoiser (img2img: from the
//                      encoded init image, WebUI's t_enc rule), then hires fix's second pass;
//   DecodeAndEmit      the VAE decode of each image to 8-bit RGB as WebUI quantises it, emitted as it is decoded.
// Generate runs all three.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/pipeline/generation_params.h"
#include "engine/pipeline/sd_pipeline.h"

namespace atelier::engine {

// Everything a job needs before its first batch, computed once.
struct GenerationPlan {
  GenerationParams params;  // after the extension shaped the job
  JobShape shape;
  JobSeeds seeds;           // one seed and subseed per image of the job
  bool img2img = false;
  // The noise schedule the samplers use: the checkpoint's, or the extension's replacement.
  std::shared_ptr<const ModelSchedule> schedule_override;
  CfgConditioning conditioning;
  // Hires fix's second pass.
  std::optional<HiresTarget> hr_target;
  HiresUpscaler hr_upscaler;
  SamplingSettings hr_settings;
  CfgConditioning hr_conditioning;
  // img2img and inpainting.
  std::optional<InpaintPlan> inpaint;
  at::Tensor latent_keep;   // inpainting's keep-mask (undefined: none)
  at::Tensor init_latent;   // [1, 4, h, w]
  at::Tensor image_cond;    // 9-channel checkpoints' conditioning [1, 5, h, w]

  const ModelSchedule& schedule(const Sd1Pipeline& pipeline) const {
    return schedule_override ? *schedule_override : pipeline.schedule();
  }
};

// INVALID_ARGUMENT for sizes the VAE cannot take, batch_size / n_iter < 1 or above max_images, and bad sampling
// or noise settings (each naming the valid range), also after the extension shaped the job.
absl::StatusOr<GenerationPlan> PrepareGeneration(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                                 const GenerationControl& control = {});

// The latents of one batch. `skipped` is set when Skip ended it.
struct BatchLatents {
  SamplingResult sampled;
  bool skipped = false;
};
absl::StatusOr<BatchLatents> SampleBatch(const Sd1Pipeline& pipeline, const GenerationPlan& plan, int batch,
                                         const GenerationControl& control);

// Decodes the batch image by image, composites inpainting, appends to `result` and calls control.image_ready with
// each image as soon as it is decoded.
absl::Status DecodeAndEmit(const Sd1Pipeline& pipeline, const GenerationPlan& plan, int batch,
                           const SamplingResult& sampled, const GenerationControl& control, GenerationResult& result);

// The batches of a prepared plan, in order, with Interrupt / Skip semantics.
absl::StatusOr<GenerationResult> RunGeneration(const Sd1Pipeline& pipeline, const GenerationPlan& plan,
                                               const GenerationControl& control = {});

// PrepareGeneration then RunGeneration.
absl::StatusOr<GenerationResult> Generate(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                          const GenerationControl& control = {});

}  // namespace atelier::engine
