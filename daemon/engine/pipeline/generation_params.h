// What a txt2img or img2img generation takes (WebUI's parameter meanings), what it reports while it runs and what
// it returns.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "engine/extension/job_extension.h"
#include "engine/pipeline/hires_fix.h"
#include "engine/pipeline/img2img_resize.h"
#include "engine/pipeline/inpainting.h"
#include "engine/sampling/cfg_denoiser.h"
#include "engine/sampling/noise.h"
#include "engine/sampling/samplers.h"
#include "engine/text/text_conditioning.h"
#include "util/stage_timer.h"

namespace atelier::engine {

struct GeneratedImage {
  at::Tensor rgb;     // uint8 [height, width, 3]
  at::Tensor latent;  // [4, height / 8, width / 8], UNet space
  int64_t seed = 0, subseed = 0;
  int index = 0;             // in the job (batch * batch_size + position)
  bool interrupted = false;  // the last x0 of an interrupted or skipped batch
  double eta = 0;            // the eta its sampler used (infotext)
  // Inpainting: the image before the composite with the original (what the model made at the job's size).
  at::Tensor uncomposited;
};

struct GenerationParams {
  std::string prompt, negative_prompt;
  int width = 512, height = 512;
  int batch_size = 1, n_iter = 1;
  // -1 draws a random seed (WebUI); the job layer fixes them before plugins see the job.
  int64_t seed = -1, subseed = -1;
  double subseed_strength = 0;
  int seed_resize_from_w = 0, seed_resize_from_h = 0;
  SamplingSettings sampling;  // sampler, scheduler, steps, CFG scale, eta, ...
  ConditioningOptions text;   // clip skip, emphasis, comma padding
  NoiseSource noise_source = NoiseSource::kGpu;
  int64_t eta_noise_seed_delta = 0;
  int max_images = 100;  // batch_size * n_iter allowed
  // img2img when defined: the init image, uint8 [height, width, 3] RGB (see ResizeInitImage);
  // sampling.denoising_strength applies.
  at::Tensor init_image;
  // WebUI's resize mode 3, "Just resize (latent upscale)": init_image has its own size (multiples of 8) and its
  // latent is resized to the job's (bilinear).
  bool latent_upscale = false;
  // Inpainting when defined: the mask, uint8 [h, w] (255 = repaint; any size, resized like the image). The init
  // image then comes at its own size and is resized here (resize_mode, or the "Only masked" crop).
  at::Tensor mask;
  InpaintSettings inpaint;
  ResizeMode resize_mode = ResizeMode::kJustResize;
  // txt2img's hires fix: a second, upscaled img2img pass (sampling.denoising_strength applies to it).
  HiresFix hires;
  // img2img: the initial noise is multiplied by this (WebUI initial_noise_multiplier, infotext "Noise multiplier").
  double initial_noise_multiplier = 1.0;
  // The eps of the VAE posterior sample [1, 4, h / 8, w / 8] of the init image's size. WebUI draws it from the
  // global torch RNG (history dependent); undefined here means a CPU generator seeded with the first image's seed.
  at::Tensor posterior_noise;
  // Infotext keys the job layer adds (the extra networks' "Lora hashes", "TI hashes"), written after the
  // img2img keys and before the sampler's, where WebUI's activation puts them in extra_generation_params.
  std::vector<std::pair<std::string, std::string>> extra_infotext;
};

struct GenerationControl {
  ProgressCallback progress;  // per sampler step of the current batch
  std::function<void(int batch, int batches)> batch_started;
  // A sampling pass begins.
  std::function<void(const PassInfo& pass)> pass_started;
  // Called with each image as soon as it is decoded; an error ends the job with it.
  std::function<absl::Status(const GeneratedImage&)> image_ready;
  // Wall time of each stage as it ends: "text", "mask", "encode" (img2img), "sampling", "upscale", "decode".
  StageReport timing;
  // Polled before every model evaluation. interrupt (WebUI's Interrupt): the current batch keeps its last x0 and
  // the remaining batches are not run. skip (WebUI's Skip; consumed when it returns true): the current batch
  // keeps its last x0 and the next batch runs.
  std::function<bool()> interrupt, skip;
  // True when nobody is left to receive the job's images (cancelled and every stream gone): decodes are skipped or
  // stopped. Polled between images and inside the VAE.
  std::function<bool()> abandoned;
  // The job's extension points (the plugins); null: none.
  JobExtension* extension = nullptr;
};

struct GenerationResult {
  std::vector<GeneratedImage> images;
  bool interrupted = false;  // Interrupt stopped the job (its images so far are in `images`)
  int skipped_batches = 0;
  at::Tensor init_latent;  // img2img
  double eta = 0;          // the eta the sampler used
};

}  // namespace atelier::engine
