// WebUI's img2img resize modes (images.resize_image): how an init image of another size becomes the job's size.
#pragma once

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::engine {

enum class ResizeMode : int {
  kJustResize = 0,          // stretch to the size
  kCropAndResize = 1,       // cover the size keeping the aspect, crop the overflow (centred)
  kResizeAndFill = 2,       // fit inside keeping the aspect, fill the bands by stretching the edge rows/columns
  kLatentUpscale = 3,       // encode at the image's own size, then resize the latent (bilinear)
};

// The image (uint8 [h, w, 3]) as the VAE encoder gets it for a job of width x height. kLatentUpscale returns the
// image at its own size, cropped to multiples of 8 (what the VAE encoder's strided convolutions keep). The resampling is
// antialiased bicubic (WebUI uses PIL's Lanczos: edges can differ by a few levels). INVALID_ARGUMENT for a bad
// mode or an empty image.
absl::StatusOr<at::Tensor> ResizeInitImage(const at::Tensor& image, ResizeMode mode, int width, int height);

}  // namespace atelier::engine
