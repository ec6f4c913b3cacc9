// The images a job brings (init image, mask), decoded as WebUI reads them.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "jobs/job_settings.h"

namespace atelier::jobs {

// Decodes the first init image and resizes it for the job (WebUI's resize modes; inpainting resizes later, with the
// mask). INVALID_ARGUMENT, naming init_images[0], for bytes that are not a readable PNG/JPEG/WebP.
absl::StatusOr<at::Tensor> DecodeInitImage(const std::string& bytes, const JobSettings& settings);

// Decodes the mask as WebUI reads it (alpha when transparent, else luma). INVALID_ARGUMENT for bytes that are not a
// readable image.
absl::StatusOr<at::Tensor> DecodeMask(const std::string& bytes, const JobSettings& settings);

}  // namespace atelier::jobs
