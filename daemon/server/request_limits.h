// The operator's limits on what one request may ask for, each a daemon flag with a documented default (the
// defaults are the daemon's hard ceilings in util/limits.h, which no flag can raise). A request over one gets
// INVALID_ARGUMENT naming the limit, its value and the flag: it can never run on this daemon as it is, so retrying
// does not help (quotas, which a wait can satisfy, answer RESOURCE_EXHAUSTED instead).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "jobs/job_settings.h"
#include "util/limits.h"

namespace atelier::server {

struct RequestLimits {
  int max_image_side = kMaxImageSide;                                     // --max-image-side
  std::int64_t max_image_pixels = std::int64_t{2048} * 2048;              // --max-image-pixels (every pass)
  int max_images_per_job = kMaxImagesPerJob;                              // --max-images-per-job (batch x n_iter)
  int max_steps = kMaxSteps;                                              // --max-steps (every pass)
  int max_frames = 256;                                                   // --max-frames (AnimateDiff video_length)
  int max_prompt_tokens = 2250;                                           // --max-prompt-tokens (30 chunks of 75)
  int max_controlnet_units = 8;                                           // --max-controlnet-units
  std::int64_t max_plugin_args_bytes = std::int64_t{4} * 1024 * 1024;   // --max-plugin-args-kb (alwayson_scripts)
};

// `prompt_tokens`: CLIP tokens of each prompt the job encodes (prompt, negative, hires prompts).
absl::Status CheckRequestLimits(const jobs::JobSettings& settings, const std::vector<int>& prompt_tokens,
                                const RequestLimits& limits);

// The ControlNet units enabled in the job's alwayson_scripts (sd-webui-controlnet's args list).
int EnabledControlNetUnits(const jobs::JobSettings& settings);

}  // namespace atelier::server
