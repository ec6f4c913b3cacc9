// Checks a job's settings against what this daemon has, before the job is queued: the checkpoint and VAE it names
// (NOT_FOUND listing what exists), a loaded model (FAILED_PRECONDITION), decodable images, a TAESD decoder for TAESD
// previews (FAILED_PRECONDITION naming the folder). Runs on gRPC threads, concurrently: it never touches the device.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "engine/models/model_manager.h"
#include "jobs/job_settings.h"

namespace atelier::jobs {

// `init_image` / `mask`: the request's encoded bytes (empty when absent).
absl::Status CheckJob(const JobSettings& settings, engine::ModelManager& models, const std::string& init_image,
                      const std::string& mask);

}  // namespace atelier::jobs
