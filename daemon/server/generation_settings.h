// A GenerateRequest (WebUI field names and meanings) turned into the engine's generation parameters, with the
// per-job WebUI options of override_settings applied. Pure translation and validation: no device, no model.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"
#include "engine/image_formats.h"
#include "engine/img2img_resize.h"
#include "engine/latent_preview.h"
#include "engine/sd_pipeline.h"

namespace atelier::server {

namespace v1 = ::atelier::v1;

struct PreviewSettings {
  engine::PreviewMethod method = engine::PreviewMethod::kApproxCheap;
  engine::ImageFileFormat format = engine::ImageFileFormat::kJpeg;
  int every_n_steps = 1;
  int max_size = 512;
};

struct OutputSettings {
  engine::ImageFileFormat format = engine::ImageFileFormat::kPng;
  int quality = 95;
  bool omit_infotext = false;
};

struct JobSettings {
  // Everything but the init image (decoded on the executor: see DecodeInitImage).
  engine::GenerationParams params;
  engine::ResizeMode resize_mode = engine::ResizeMode::kJustResize;
  bool inpaint = false;  // a mask was given
  // override_settings sd_model_checkpoint / sd_vae: empty / nullopt = keep what is loaded.
  std::string checkpoint;
  std::optional<std::string> vae;
  PreviewSettings preview;
  OutputSettings output;
  // override_settings keys this daemon does not use (accepted, as WebUI accepts any option name).
  std::vector<std::string> ignored_settings;
};

// `request` must have passed ValidateAndFillDefaults. INVALID_ARGUMENT names the field and the valid choices
// (samplers, schedulers, RNG sources, emphasis modes, preview methods, option types); UNIMPLEMENTED for WebUI
// features this build does not have yet (inpainting masks, hires fix, styles, selectable scripts, infotext paste).
absl::StatusOr<JobSettings> JobSettingsFromRequest(const v1::GenerateRequest& request);

// Decodes the request's first init image and resizes it for the job (WebUI's resize modes). INVALID_ARGUMENT for
// bytes that are not a readable PNG/JPEG/WebP.
absl::StatusOr<at::Tensor> DecodeInitImage(const std::string& bytes, const JobSettings& settings);

// Decodes the request's mask as WebUI reads it (alpha when transparent, else luma). INVALID_ARGUMENT for bytes that
// are not a readable image.
absl::StatusOr<at::Tensor> DecodeMask(const std::string& bytes, const JobSettings& settings);

// The v1 ImageFormat as a file format (unspecified -> `fallback`).
engine::ImageFileFormat FileFormatOf(v1::ImageFormat format, engine::ImageFileFormat fallback);

}  // namespace atelier::server
