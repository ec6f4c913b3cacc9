// The models of one loaded SD1.x checkpoint (text encoder, UNet, VAE, noise schedule), built once and shared
// read-only by every job, and the VAE encode of an 8-bit image into the UNet's latent space.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/models/clip_text_model.h"
#include "engine/models/unet.h"
#include "engine/models/vae.h"
#include "engine/sampling/model_schedule.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/text/embeddings.h"
#include "engine/text/text_conditioning.h"

namespace atelier::engine {

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
  // For patching weights between jobs (LoRA), on the executor thread only.
  UNet& mutable_unet() { return *unet_; }
  ClipTextModel& mutable_clip() { return *clip_; }

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

// The img2img start: scale_factor * (posterior mean + std * eps) of an image (uint8 HWC, or float HWC in
// [0, 255]); `posterior_noise` [1, 4, h / 8, w / 8] is the eps.
absl::StatusOr<at::Tensor> EncodeInitImage(const Sd1Pipeline& pipeline, const at::Tensor& image_uint8,
                                           const at::Tensor& posterior_noise);

}  // namespace atelier::engine
