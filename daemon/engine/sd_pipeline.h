// WebUI's txt2img and img2img for a loaded SD1.x checkpoint (processing.py process_images): per batch the
// prompts' conditioning (prompt-editing schedules, AND), one noise generator per image, the sampler over the CFG
// denoiser (img2img: from the encoded init image, WebUI's t_enc rule), and the VAE decode to 8-bit RGB as WebUI
// quantises it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/checkpoint_loader.h"
#include "engine/clip_text_model.h"
#include "engine/clip_tokenizer.h"
#include "engine/embeddings.h"
#include "engine/hires_fix.h"
#include "engine/inpainting.h"
#include "engine/infotext.h"
#include "engine/model_schedule.h"
#include "engine/noise.h"
#include "engine/samplers.h"
#include "engine/text_conditioning.h"
#include "engine/unet.h"
#include "engine/vae.h"

namespace atelier::engine {

// The models of one loaded checkpoint, built once and shared by jobs (read-only).
class Sd1Pipeline {
 public:
  // `tokenizer` (and `embeddings`, may be null) must outlive the pipeline.
  static absl::StatusOr<std::unique_ptr<Sd1Pipeline>> Create(std::shared_ptr<const Sd1Weights> weights,
                                                             const ClipTokenizer& tokenizer,
                                                             const EmbeddingDatabase* embeddings);

  const Sd1Weights& weights() const { return *weights_; }
  const TextConditioner& text() const { return *text_; }
  const UNet& unet() const { return *unet_; }
  const Vae& vae() const { return *vae_; }
  const ModelSchedule& schedule() const { return *schedule_; }
  const at::Device& device() const { return device_; }

 private:
  Sd1Pipeline() = default;
  std::shared_ptr<const Sd1Weights> weights_;
  std::unique_ptr<ClipTextModel> clip_;
  std::unique_ptr<TextConditioner> text_;
  std::unique_ptr<UNet> unet_;
  std::unique_ptr<Vae> vae_;
  std::unique_ptr<ModelSchedule> schedule_;
  at::Device device_ = at::kCPU;
};

struct GeneratedImage {
  at::Tensor rgb;  // uint8 [height, width, 3]
  at::Tensor latent;  // [4, height / 8, width / 8], UNet space
  int64_t seed = 0, subseed = 0;
  int index = 0;  // in the job (batch * batch_size + position)
  bool interrupted = false;  // the last x0 of an interrupted or skipped batch
  double eta = 0;            // the eta its sampler used (infotext)
  // Inpainting: the image before the composite with the original (what the model made at the job's size).
  at::Tensor uncomposited;
};

// A txt2img or img2img request with WebUI's parameter meanings.
struct GenerationParams {
  std::string prompt, negative_prompt;
  int width = 512, height = 512;
  int batch_size = 1, n_iter = 1;
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
  // The eps of the VAE posterior sample [1, 4, h / 8, w / 8] of the init image's size. WebUI draws it from the global torch RNG
  // (history dependent); undefined here means a CPU generator seeded with the first image's seed.
  at::Tensor posterior_noise;
};

// Per UNet call: the plugins' residuals and block hooks (the host's job hooks implement this). Prepare is called
// right after the CFG denoiser's BeforeModel hook of the same evaluation.
class UNetCallHooks {
 public:
  virtual ~UNetCallHooks() = default;
  // Sets `options` for one call on these rows; `residuals` is storage options.residuals may point at.
  virtual absl::Status Prepare(const at::Tensor& x, const at::Tensor& t, const at::Tensor& context,
                               std::array<at::Tensor, kUNetResiduals>& residuals, UNetCallOptions& options) = 0;
};

struct GenerationControl {
  ProgressCallback progress;  // per sampler step of the current batch
  std::function<void(int batch, int batches)> batch_started;
  // A sampling pass begins: "txt2img", "img2img" or "hires".
  std::function<void(const char* pass)> pass_started;
  // Called with each image as soon as its batch is decoded; an error ends the job with it.
  std::function<absl::Status(const GeneratedImage&)> image_ready;
  // Wall time of each stage as it ends: "text", "encode" (img2img), "sampling", "decode".
  std::function<void(const char* stage, double seconds)> timing;
  // Polled before every model evaluation. interrupt (WebUI's Interrupt): the current batch keeps its last x0 and
  // the remaining batches are not run. skip (WebUI's Skip; consumed when it returns true): the current batch
  // keeps its last x0 and the next batch runs.
  std::function<bool()> interrupt, skip;
  CfgHooks* hooks = nullptr;
  UNetCallHooks* unet_hooks = nullptr;
};

struct GenerationResult {
  std::vector<GeneratedImage> images;
  bool interrupted = false;  // Interrupt stopped the job (its images so far are in `images`)
  int skipped_batches = 0;
  at::Tensor init_latent;  // img2img
  double eta = 0;  // the eta the sampler used
};

// INVALID_ARGUMENT for sizes the VAE cannot take, batch_size / n_iter < 1 or above max_images, and bad sampling
// or noise settings (each naming the valid range).
absl::StatusOr<GenerationResult> Generate(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                          const GenerationControl& control = {});

// The infotext WebUI would write for image `index` of this job (the eta the sampler used decides "Eta"/"ENSD").
InfotextFields GenerationInfotext(const Sd1Pipeline& pipeline, const GenerationParams& params,
                                  const GeneratedImage& image, double eta);
// The same from the checkpoint's identity alone (file name, hash, VAE source).
InfotextFields GenerationInfotext(const Sd1Weights& weights, const GenerationParams& params,
                                  const GeneratedImage& image, double eta);

// The img2img start: 0.18215 * (posterior mean + std * eps) of the init image (uint8 HWC -> [-1, 1]).
absl::StatusOr<at::Tensor> EncodeInitImage(const Sd1Pipeline& pipeline, const at::Tensor& image_uint8,
                                           const at::Tensor& posterior_noise);

}  // namespace atelier::engine
