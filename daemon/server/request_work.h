// A generation's size for quotas, in megapixel-steps (client_quotas.h): Σ over its passes of width x height / 10^6
// x steps x images, where an AnimateDiff job's images are its video's frames (sd-webui-animatediff makes the batch
// the video: video_length, or its batch_size when 0) per n_iter.
#pragma once

#include "jobs/job_settings.h"

namespace atelier::server {

// The frames of the job's AnimateDiff video, 0 when AnimateDiff is not enabled in its alwayson_scripts.
int AnimateDiffFrames(const jobs::JobSettings& settings);

double MegapixelSteps(const jobs::JobSettings& settings);

}  // namespace atelier::server
