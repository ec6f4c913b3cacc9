#include "jobs/job_inputs.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/models/nn_util.h"
#include "engine/pipeline/inpainting.h"
#include "image/image_formats.h"

namespace atelier::jobs {

absl::StatusOr<at::Tensor> DecodeMask(const std::string& bytes, const JobSettings& settings) {
  auto image = engine::DecodeImage(bytes);
  if (!image.ok()) return absl::InvalidArgumentError(absl::StrCat("mask: ", image.status().message()));
  try {
    const at::Tensor pixels =
        at::from_blob(image->pixels.data(), {image->height, image->width, image->channels}, at::kByte).clone();
    return engine::MaskFromImage(pixels, settings.params.inpaint.round);
  } catch (const std::exception& e) {
    return engine::StatusFromException(e, "reading the mask");
  }
}

absl::StatusOr<at::Tensor> DecodeInitImage(const std::string& bytes, const JobSettings& settings) {
  auto image = engine::DecodeImageRgb(bytes);
  if (!image.ok()) return absl::InvalidArgumentError(absl::StrCat("init_images[0]: ", image.status().message()));
  try {
    const at::Tensor pixels =
        at::from_blob(image->pixels.data(), {image->height, image->width, 3}, at::kByte).clone();
    // Inpainting resizes (or crops) together with the mask, in the engine.
    if (settings.inpaint) return pixels;
    return engine::ResizeInitImage(pixels, settings.resize_mode, settings.params.width, settings.params.height);
  } catch (const std::exception& e) {
    return engine::StatusFromException(e, "reading the init image");
  }
}

}  // namespace atelier::jobs
