// One generation job from start to end, whatever carries it (the server's gRPC streams, a test): the pipeline for
// the job's checkpoint, its images decoded, seeds fixed once, the plugins' part (host::JobHooks, the engine's
// JobExtension) from process to job_end, the engine's prepare / sampling / decode (engine/pipeline/generate.h),
// live previews, and every image sent as soon as it is decoded: through the plugins' frame hooks, with its own
// seed and infotext, encoded as the request asked. Runs on the executor thread.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "host/plugin_registry.h"
#include "jobs/job_events.h"
#include "jobs/job_settings.h"
#include "jobs/pipeline_cache.h"

namespace atelier::jobs {

// `init_image` / `mask`: the request's encoded images (empty when absent). CANCELLED when the job was stopped
// (the images made so far were delivered, the last one marked interrupted).
absl::Status RunGenerationJob(PipelineCache& pipelines, const host::PluginRegistry& plugins,
                              const JobSettings& settings, const std::string& init_image, const std::string& mask,
                              JobEvents& events);

}  // namespace atelier::jobs
