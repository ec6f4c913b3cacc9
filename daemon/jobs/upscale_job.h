// WebUI's Extras upscale (scripts/postprocessing_upscale.py, /sdapi/v1/extra-single-image and extra-batch-images)
// as a job: each image upscaled by a factor or to a size, optionally centre-cropped to it, optionally blended with
// a second upscaler's result, and streamed as a result with WebUI's "Postprocess ..." infotext.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/upscale/image_upscaler.h"
#include "jobs/job_events.h"
#include "jobs/job_settings.h"
#include "jobs/pipeline_cache.h"

namespace atelier::jobs {

struct UpscaleSettings {
  std::vector<std::string> images;  // encoded PNG / JPEG / WebP
  int resize_mode = 0;              // 0: by `upscale_by`; 1: to to_width x to_height
  double upscale_by = 2.0;
  bool upscale_by_given = false;    // WebUI prints the default as "2", a given 2 as "2.0"
  int to_width = 512, to_height = 512;
  bool crop = true;                 // mode 1: centre the result on a to_width x to_height canvas
  std::string upscaler_1 = "None", upscaler_2 = "None";
  double upscaler_2_visibility = 0;
  engine::TileOptions tiles;
  OutputSettings output;
};

// INVALID_ARGUMENT naming the field for a factor outside [1, 8], a size outside 1..kMaxUpscaleSide, a visibility
// outside [0, 1], no images or too many; upscaler names are checked against the files (see UpscalerCatalog::Find).
absl::Status CheckUpscale(const UpscaleSettings& settings, const engine::ModelFolders* folders);

// Runs on the executor thread.
absl::Status RunUpscaleJob(PipelineCache& pipelines, const UpscaleSettings& settings, JobEvents& events);

}  // namespace atelier::jobs
