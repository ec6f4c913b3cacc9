#include "engine/pipeline/sd_pipeline.h"

#include <string>
#include <utility>

#include <ATen/ATen.h>

#include "engine/models/nn_util.h"

namespace atelier::engine {

absl::StatusOr<std::unique_ptr<Sd1Pipeline>> Sd1Pipeline::Create(std::shared_ptr<const Sd1Weights> weights,
                                                                  const ClipTokenizer& tokenizer,
                                                                  const EmbeddingDatabase* embeddings) {
  std::unique_ptr<Sd1Pipeline> p(new Sd1Pipeline());
  p->weights_ = std::move(weights);
  const Sd1Weights& w = *p->weights_;
  auto clip = ClipTextModel::Create(w.config.clip, w.text_encoder);
  if (!clip.ok()) return clip.status();
  p->clip_ = *std::move(clip);
  p->text_ = std::make_unique<TextConditioner>(tokenizer, *p->clip_, embeddings);
  auto unet = UNet::Create(w.config.unet, w.unet);
  if (!unet.ok()) return unet.status();
  p->unet_ = *std::move(unet);
  auto vae = Vae::Create(w.config.vae, w.vae);
  if (!vae.ok()) return vae.status();
  p->vae_ = *std::move(vae);
  try {
    p->device_ = at::Device(w.device.empty() ? std::string("cpu") : w.device);
    p->schedule_ = std::make_unique<ModelSchedule>(w.alphas_cumprod.to(at::kCPU, at::kFloat));
  } catch (const std::exception& e) {
    return StatusFromException(e, "building the noise schedule");
  }
  return p;
}

absl::StatusOr<at::Tensor> EncodeInitImage(const Sd1Pipeline& pipeline, const at::Tensor& image_uint8,
                                           const at::Tensor& posterior_noise) {
  try {
    const at::Tensor image =
        (image_uint8.to(at::kFloat) / 255.0).permute({2, 0, 1}).unsqueeze(0).mul(2).sub(1).to(pipeline.device());
    auto posterior = pipeline.vae().Encode(image);
    if (!posterior.ok()) return posterior.status();
    return posterior->Sample(posterior_noise.to(posterior->mean.device())) * pipeline.weights().config.scale_factor;
  } catch (const std::exception& e) {
    return StatusFromException(e, "encoding the init image");
  }
}

}  // namespace atelier::engine
