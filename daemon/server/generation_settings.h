// A GenerateRequest (WebUI field names and meanings) turned into the job layer's settings (jobs/job_settings.h),
// with the per-job WebUI options of override_settings applied. Pure translation and validation: no device, no model.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"
#include "image/image_formats.h"
#include "engine/pipeline/img2img_resize.h"
#include "engine/pipeline/latent_preview.h"
#include "jobs/job_settings.h"

namespace atelier::server {

namespace v1 = ::atelier::v1;

using jobs::JobSettings;
using jobs::OutputSettings;
using jobs::PreviewSettings;

// `request` must have passed ValidateAndFillDefaults. INVALID_ARGUMENT names the field and the valid choices
// (samplers, schedulers, RNG sources, emphasis modes, preview methods, option types); UNIMPLEMENTED for WebUI
// features this build does not have yet (inpainting masks, hires fix, styles, selectable scripts, infotext paste).
absl::StatusOr<JobSettings> JobSettingsFromRequest(const v1::GenerateRequest& request);

// The v1 ImageFormat as a file format (unspecified -> `fallback`).
engine::ImageFileFormat FileFormatOf(v1::ImageFormat format, engine::ImageFileFormat fallback);

}  // namespace atelier::server
