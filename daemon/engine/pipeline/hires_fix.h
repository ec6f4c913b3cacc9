// WebUI's txt2img hires fix (processing.py StableDiffusionProcessingTxt2Img): the second pass's size
// (calculate_target_resolution), its upscalers (the latent modes, and image-space "None"/"Lanczos"/"Nearest"),
// and its settings. The pass itself runs in Generate (sd_pipeline.cc).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/sampling/sampler_table.h"
#include "engine/upscale/image_upscaler.h"

namespace atelier::engine {

struct HiresFix {
  bool enabled = false;
  double scale = 2.0;              // used when resize_x and resize_y are both 0
  int resize_x = 0, resize_y = 0;  // "Hires resize"
  std::string upscaler;            // empty: "Latent" (and no "Hires upscaler" in the infotext, as WebUI's API)
  int second_pass_steps = 0;       // 0: the first pass's steps
  std::optional<SamplerChoice> sampler;  // hr_sampler_name / hr_scheduler resolved; nullopt: the first pass's
  bool sampler_named = false, scheduler_named = false;  // what the request named (infotext keys)
  std::string prompt, negative_prompt;  // empty: the first pass's
  // A model upscaler (ESRGAN family) named by `upscaler`, resolved and loaded by the job layer; null for the
  // latent modes and the built-in None / Lanczos / Nearest.
  std::shared_ptr<const ImageUpscaler> model;
};

enum class HiresUpscaleKind { kLatent, kImage };

struct HiresUpscaler {
  std::string name;
  HiresUpscaleKind kind = HiresUpscaleKind::kLatent;
  std::string mode;  // latent: "bilinear", "bicubic", "nearest", "nearest-exact"; image: "lanczos", "nearest"
  bool antialias = false;
  std::shared_ptr<const ImageUpscaler> model;  // kImage from a model file (HiresFix::model)
};

// The latent modes and the built-in image upscalers by WebUI name; NOT_FOUND listing them for anything else (a model
// upscaler's name, which the job layer resolves through the UpscalerCatalog).
absl::StatusOr<HiresUpscaler> FindHiresUpscaler(absl::string_view name);
std::vector<std::string> HiresUpscalerNames();

struct HiresTarget {
  int width = 0, height = 0;          // hr_upscale_to_x / _y (the latent gets width / 8 x height / 8)
  int truncate_x = 0, truncate_y = 0;  // latent columns / rows cropped after upscaling (resize to another aspect)
};

// calculate_target_resolution for a first pass of width x height. INVALID_ARGUMENT for a scale outside (0, 16],
// negative resize values, or a target outside 64..max_side.
absl::StatusOr<HiresTarget> HiresTargetSize(int width, int height, const HiresFix& hr, int max_side);

// Upscales UNet-space latents [B, 4, h, w] with a latent upscaler to [B, 4, height, width] (F.interpolate's modes).
absl::StatusOr<at::Tensor> UpscaleLatent(const at::Tensor& latent, const HiresUpscaler& upscaler, int64_t height,
                                         int64_t width);
// Resizes uint8 images [B, H, W, 3] as WebUI's images.resize_image does with the upscaler: a model upscaler, or the
// built-in "None" (PIL's Lanczos), "Lanczos" and "Nearest".
absl::StatusOr<at::Tensor> UpscaleImages(const at::Tensor& images, const HiresUpscaler& upscaler, int64_t height,
                                         int64_t width, const UpscaleStop& stop = nullptr);

}  // namespace atelier::engine
