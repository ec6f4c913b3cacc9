// WebUI's HTTP API shapes (AUTOMATIC1111 modules/api/models.py, processing.py): the request model's defaults echoed
// as "parameters", Processed.js() as the "info" string, /progress, and FastAPI-style errors. Pure functions of
// the daemon's messages, so they are unit-tested without a daemon.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

namespace atelier::web {

// StableDiffusionTxt2ImgProcessingAPI / Img2Img...API with every field at WebUI's default, overlaid with `payload`
// (what WebUI's response echoes as "parameters"). Images in the payload are kept as sent.
nlohmann::json RequestParameters(const nlohmann::json& payload, bool img2img);

// What one finished job gave, for Processed.js().
struct JobOutcome {
  std::vector<std::int64_t> all_seeds, all_subseeds;
  std::vector<std::string> infotexts;  // one per image, in order
  std::int64_t started_unix_ms = 0;    // job_timestamp
};

// Processed.js(): the JSON text WebUI returns as "info". `parameters` is RequestParameters' result.
std::string InfoJson(const nlohmann::json& parameters, const JobOutcome& outcome);

// The HTTP status WebUI's API answers for a daemon status: 422 bad field, 404 unknown name, 401 / 403, 429 limits,
// 503 daemon away or draining, 504 deadline, 500 otherwise.
int HttpStatusOf(grpc::StatusCode code);
// WebUI's error body {"error", "detail", "body", "errors"} (api.py's exception handler).
nlohmann::json ErrorBody(const std::string& error, const std::string& detail);

// A job state's lower-case name ("queued", "running", "succeeded", "cancelled", "failed"), as the page shows it.
const char* JobStateName(int state);

// One job's progress as WebUI's shared.state keeps it, for /sdapi/v1/progress.
struct ProgressState {
  bool active = false;
  bool skipped = false, interrupted = false;
  std::string job;             // the job id
  std::int64_t started_unix_ms = 0;
  int job_no = 0, job_count = 0, sampling_step = 0, sampling_steps = 0;
  double elapsed_seconds = 0;
  std::string textinfo;
  std::string current_image;   // encoded preview; empty: none
};

// ProgressResponse: progress = 0.01 + job_no / job_count + step / steps / job_count (clamped to 1), eta_relative =
// elapsed / progress - elapsed, state{...}, current_image as plain base64 (null when none or skipped).
nlohmann::json ProgressJson(const ProgressState& state, bool skip_current_image);

}  // namespace atelier::web
