// Live previews of a running job (WebUI's live preview): the current x0 of each image rendered with the job's
// preview method, laid out as WebUI's image grid, shrunk to the preview size and encoded.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/taesd.h"
#include "engine/pipeline/latent_preview.h"
#include "engine/pipeline/sd_pipeline.h"
#include "image/image_formats.h"
#include "jobs/job_events.h"
#include "jobs/job_settings.h"

namespace atelier::jobs {

// An 8-bit RGB image uint8 [H, W, 3] encoded as a file.
absl::StatusOr<EncodedImage> EncodeRgb(const at::Tensor& rgb, const engine::ImageEncodeOptions& options);

class LivePreview {
 public:
  // `taesd` may be null unless the method is TAESD. Both must outlive the preview.
  LivePreview(const PreviewSettings& settings, const engine::Sd1Pipeline& pipeline, const engine::Taesd* taesd);

  // Whether step `step` (1-based) of `total` gets a preview.
  bool Due(int step, int total) const;
  // The preview of latents x0 [images, 4, h, w]; an error is the caller's to log (a job never fails for it).
  absl::StatusOr<EncodedImage> Render(const at::Tensor& x0) const;

 private:
  PreviewSettings settings_;
  engine::LatentPreviewer previewer_;
  engine::ImageEncodeOptions encoding_;
};

}  // namespace atelier::jobs
