// One generation job's settings, parsed and validated once when the request is admitted (server: from the gRPC
// request; jobs/job_check: against the loaded models) and read by the job layer when the job runs.
#pragma once

#include "engine/upscale/image_upscaler.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/pipeline/generation_params.h"
#include "engine/pipeline/img2img_resize.h"
#include "engine/pipeline/latent_preview.h"
#include "image/image_formats.h"

namespace atelier::jobs {

struct PreviewSettings {
  engine::PreviewMethod method = engine::PreviewMethod::kApproxCheap;
  engine::ImageFileFormat format = engine::ImageFileFormat::kJpeg;
  int every_n_steps = 1;  // <= 0: only a batch's last step
  int max_size = 512;     // longer side of the preview, pixels
};

struct OutputSettings {
  engine::ImageFileFormat format = engine::ImageFileFormat::kPng;
  int quality = 95;
  bool omit_infotext = false;
};

struct JobSettings {
  // Everything but the init image and mask (decoded when the job runs: see job_inputs.h).
  engine::GenerationParams params;
  engine::ResizeMode resize_mode = engine::ResizeMode::kJustResize;
  bool img2img = false;
  bool inpaint = false;  // a mask was given
  // override_settings sd_model_checkpoint / sd_vae: empty / nullopt = keep what is loaded.
  std::string checkpoint;
  std::optional<std::string> vae;
  PreviewSettings preview;
  OutputSettings output;
  // alwayson_scripts values as the JSON text plugins receive, keyed by lower-case plugin name.
  std::map<std::string, std::string> plugin_args;
  // override_settings keys this daemon does not use (accepted, as WebUI accepts any option name).
  std::vector<std::string> ignored_settings;
  // override_settings lora_missing_warn: a <lora:...> that names no file is a warning (WebUI's behaviour) instead of
  // NOT_FOUND. lora_add_hashes_to_infotext / textual_inversion_add_hashes_to_infotext: WebUI's options (default on).
  bool lora_missing_warn = false;
  // override_settings ESRGAN_tile / ESRGAN_tile_overlap (WebUI's defaults 192 / 8) for model upscalers.
  engine::TileOptions upscaler_tiles;
  bool lora_hashes_infotext = true;
  bool ti_hashes_infotext = true;
};

}  // namespace atelier::jobs
