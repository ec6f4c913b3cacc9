// TAESD, the tiny autoencoder for SD latents (madebyollin/taesd, as WebUI's modules/sd_vae_taesd.py runs it): a
// decoder from a UNet-space latent [B, 4, h, w] (no 1/0.18215 scaling) to an RGB image [B, 3, 8h, 8w] in about
// [0, 1], and an encoder back. Used for cheap live previews and as an optional fast decode/encode.
//
// Module members are named after the released files' keys: the index in the nn.Sequential ("1.weight",
// "3.conv.0.weight", "7.weight" (no bias), ...). Files may also carry them under "decoder."/"encoder." (WebUI's
// attribute names; one file may hold both parts).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"

namespace atelier::engine {

enum class TaesdPart { kDecoder, kEncoder };

// "decoder" / "encoder".
const char* TaesdPartName(TaesdPart part);

class Taesd {
 public:
  // Builds the parts whose weights are given (names as in the released file, with or without the part prefix;
  // the tensors are used as they are: convert the dtype before). At least one part. Missing, unexpected or
  // mis-shaped tensors are an error naming them.
  static absl::StatusOr<std::unique_ptr<Taesd>> Create(const WeightMap* decoder, const WeightMap* encoder);

  // Loads taesd_decoder / taesd_encoder (.safetensors, else .pth through the non-executing pickle reader) from
  // `folder` (WebUI's models/VAE-approx), converting to `dtype`. A part whose file is absent is not loaded;
  // neither present is FAILED_PRECONDITION naming the folder and the file names.
  static absl::StatusOr<std::unique_ptr<Taesd>> LoadFromFolder(const std::filesystem::path& folder,
                                                                at::ScalarType dtype = at::kFloat);
  // The file of a part in `folder`, NOT_FOUND naming the folder and the accepted names if there is none.
  static absl::StatusOr<std::filesystem::path> FindFile(const std::filesystem::path& folder, TaesdPart part);

  ~Taesd();

  // Every parameter name of a part (without prefix) with its shape.
  static std::vector<std::pair<std::string, std::vector<std::int64_t>>> ParameterShapes(TaesdPart part);

  bool has_decoder() const;
  bool has_encoder() const;

  // UNet-space latent [B, 4, h, w] -> image [B, 3, 8h, 8w], raw (about [0, 1], not clamped), float32.
  // FAILED_PRECONDITION without a decoder; INVALID_ARGUMENT for a wrong shape.
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& latent) const;
  // Image [B, 3, H, W] in [0, 1], H and W multiples of 8 -> UNet-space latent [B, 4, H/8, W/8], float32.
  absl::StatusOr<at::Tensor> Encode(const at::Tensor& image) const;

 private:
  struct Impl;
  Taesd();
  std::unique_ptr<Impl> impl_;
};

}  // namespace atelier::engine
