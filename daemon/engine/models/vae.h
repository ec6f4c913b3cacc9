// The SD1.x VAE (LDM AutoencoderKL: Encoder -> quant_conv -> diagonal Gaussian posterior; post_quant_conv ->
// Decoder), as stored under first_stage_model.* or in a standalone VAE file (models/VAE, same names without the
// prefix). Module members are named after the checkpoint keys (encoder.down.0.block.1.norm1, decoder.mid.attn_1.q,
// quant_conv, ...).
//
// Large images are encoded/decoded in overlapping tiles so memory stays bounded: tiles of 64x64 latent pixels
// (512x512 image pixels) with 16 latent pixels (128 image pixels) of overlap, blended linearly across the overlap.
// Only the full-resolution convolution paths are tiled: the latent-resolution part with the mid-block attention
// runs on the whole latent (up to 128x128 latent pixels), and every tile normalises with the same GroupNorm
// statistics, combined from a first pass in which every tile uses its own. So tiles agree with each other (no
// seams or colour shifts) and the result stays close to the untiled reference (the tests state the bound).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/models/sd_config.h"

namespace atelier::engine {

// DiagonalGaussianDistribution of the encoder's moments.
struct VaePosterior {
  at::Tensor mean;    // [B, 4, h, w] float32
  at::Tensor logvar;  // clamped to [-30, 20]
  at::Tensor std;     // exp(0.5 * logvar)
  // mean + std * noise (noise of the mean's shape).
  at::Tensor Sample(const at::Tensor& noise) const;
};

struct VaeTiling {
  int64_t tile = 64;     // latent pixels per tile side
  int64_t overlap = 16;  // latent pixels shared by neighbouring tiles
};

enum class VaeTileMode {
  kAuto,    // untiled up to max_untiled_pixels, tiled above it, and tiled again if untiled runs out of memory
  kNever,   // untiled; running out of memory is RESOURCE_EXHAUSTED
  kAlways,  // tiled
};

struct VaeCallOptions {
  VaeTileMode mode = VaeTileMode::kAuto;
  VaeTiling tiling;
  int64_t max_untiled_pixels = 1024 * 1024;  // image pixels (per batch item) decoded in one piece by kAuto
};

// Intermediate values of an encode, for tests.
struct VaeEncodeTrace {
  at::Tensor encoder_out, moments;
};

class Vae {
 public:
  // Builds the autoencoder for `config` and takes its weights (names below first_stage_model.; shared).
  // Missing, unexpected or mis-shaped tensors are an error naming them.
  static absl::StatusOr<std::unique_ptr<Vae>> Create(const VaeConfig& config, const WeightMap& weights);
  ~Vae();

  // Every parameter name (below first_stage_model.) with its shape, for `config`.
  static std::vector<std::pair<std::string, std::vector<std::int64_t>>> ParameterShapes(const VaeConfig& config);

  // image [B, 3, H, W] in [-1, 1], H and W multiples of 8 -> posterior of the first-stage latent [B, 4, H/8, W/8].
  absl::StatusOr<VaePosterior> Encode(const at::Tensor& image, const VaeCallOptions& options = {},
                                      VaeEncodeTrace* trace = nullptr) const;
  // First-stage latent [B, 4, h, w] (NOT multiplied by the scale factor) -> image [B, 3, 8h, 8w], raw (about
  // [-1, 1], not clamped), float32.
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& latent, const VaeCallOptions& options = {}) const;
  // post_quant_conv alone (for tests).
  at::Tensor PostQuantConv(const at::Tensor& latent) const;

  const VaeConfig& config() const { return config_; }
  at::ScalarType dtype() const;
  // How many tiled encodes/decodes ran because an untiled one ran out of memory (for the log and tests).
  int64_t oom_fallbacks() const;

 private:
  struct Impl;
  explicit Vae(const VaeConfig& config);
  absl::StatusOr<at::Tensor> DecodeWhole(const at::Tensor& latent) const;
  absl::StatusOr<at::Tensor> EncodeWhole(const at::Tensor& image, VaeEncodeTrace* trace) const;
  absl::StatusOr<at::Tensor> DecodeTiled(const at::Tensor& latent, const VaeTiling& tiling) const;
  absl::StatusOr<at::Tensor> EncodeTiled(const at::Tensor& image, const VaeTiling& tiling) const;
  VaeConfig config_;
  std::unique_ptr<Impl> impl_;
};

// An image size (pixels) the VAE can take: positive multiples of 8; INVALID_ARGUMENT naming the size otherwise.
absl::Status CheckImageSize(int64_t width, int64_t height);

}  // namespace atelier::engine
