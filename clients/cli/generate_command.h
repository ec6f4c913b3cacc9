// `atelier txt2img` / `atelier img2img`: a GenerateRequest from WebUI-named flags or a WebUI API payload
// (--json), the job's stream shown live (progress bar, previews saved on request), results written as files with
// WebUI-style names, and their infotext printed.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"

namespace atelier::cli {

struct GenerateFlags {
  bool img2img = false;
  std::string json_file;
  std::string from_image;  // --from: an image whose infotext fills what the flags leave unset
  std::string prompt, negative_prompt, sampler, scheduler, init_image, checkpoint, vae, randn_source, job_id;
  std::string mask, inpaint_area;
  int mask_blur = 4, inpainting_fill = 0, padding = 0;
  bool invert_mask = false;
  // Hires fix (txt2img).
  bool enable_hr = false;
  double hr_scale = 2.0;
  int hr_steps = 0, hr_resize_x = 0, hr_resize_y = 0;
  std::string hr_upscaler;
  int steps = 0, width = 0, height = 0, batch_size = 0, n_iter = 0, clip_skip = 0, resize_mode = 0;
  long long seed = -1, subseed = -1, ensd = 0;
  double cfg_scale = 0, denoising_strength = 0, subseed_strength = 0, eta = 0, noise_multiplier = 1;
  std::vector<std::string> overrides;  // KEY=VALUE (VALUE as JSON, else a string)
  std::vector<std::string> scripts;    // NAME=JSON (alwayson_scripts)
  std::vector<std::string> controlnet; // image=FILE,module=...,model=...,... (one sd-webui-controlnet unit each)
  std::string animatediff;             // model=...,video_length=16,format=GIF+MP4,... (sd-webui-animatediff's fields)
  std::string preview_method = "approx-cheap", preview_format = "jpeg", output_format;
  int preview_every = 0;
  std::string previews_dir, output_dir = ".";
  bool quiet = false;
  bool no_retry = false;  // --no-retry: do not resubmit a job the daemon dropped (UNAVAILABLE) once

  // Set by AddGenerateFlags: which flags were given (they override --json values).
  std::map<std::string, CLI::Option*> options;
  bool Given(const std::string& name) const;
};

// Registers the flags on `command` (txt2img or img2img).
void AddGenerateFlags(CLI::App* command, GenerateFlags& flags);

// The request the flags (and the --json payload, if any) describe. INVALID_ARGUMENT for unreadable files or
// malformed JSON.
absl::StatusOr<v1::GenerateRequest> BuildRequest(const GenerateFlags& flags);

// Runs the job and returns the process exit code; `fail` prints a failed status and returns its exit code.
int RunGenerate(const std::shared_ptr<grpc::Channel>& channel, const GenerateFlags& flags,
                const std::function<int(const grpc::Status&)>& fail);

// `atelier info FILE...`: prints each image's infotext (PNG parameters chunk or JPEG/WebP EXIF UserComment).
int PrintInfo(const std::vector<std::string>& files);

}  // namespace atelier::cli
