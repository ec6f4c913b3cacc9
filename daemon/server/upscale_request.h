// Generation.Upscale as a job: the request read into the job layer's UpscaleSettings and checked when it is
// admitted, kept with the job, and run on the executor.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"
#include "engine/io/model_folders.h"
#include "jobs/pipeline_cache.h"
#include "jobs/upscale_job.h"
#include "server/job.h"
#include "server/job_context.h"

namespace atelier::server {

struct PreparedUpscale final : PreparedJob {
  jobs::UpscaleSettings settings;
};

// INVALID_ARGUMENT / FAILED_PRECONDITION as CheckUpscale says.
absl::StatusOr<std::shared_ptr<const PreparedUpscale>> PrepareUpscale(const v1::UpscaleRequest& request,
                                                                      const engine::ModelFolders* folders);

// Runs the job when it is an upscale (true), leaving its status in `status`; false for any other job.
bool RunIfUpscale(JobContext& context, jobs::PipelineCache& pipelines, absl::Status& status);

}  // namespace atelier::server
