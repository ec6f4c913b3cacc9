// PIL's Image.resize(size, Image.LANCZOS) for 8-bit RGB, exactly (Pillow's Resample.c): a separable Lanczos-3
// convolution whose support widens with the reduction factor, coefficients normalised per output pixel and
// rounded to 22-bit fixed point, the horizontal pass first (into 8 bits) and then the vertical one. WebUI's
// upscalers end with it (Upscaler.upscale, images.resize_image).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::engine {

// uint8 [H, W, C] (CPU) -> uint8 [height, width, C]. INVALID_ARGUMENT for another dtype / rank or a size below 1.
absl::StatusOr<at::Tensor> PilResizeLanczos(const at::Tensor& image, int64_t width, int64_t height);

}  // namespace atelier::engine
