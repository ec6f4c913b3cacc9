// Loading an SD1.x checkpoint (and optionally a separate VAE) into the per-component weight maps the model code
// reads, in the compute dtype on the compute device.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/checkpoint_layout.h"
#include "engine/models/sd_config.h"

namespace atelier::engine {

using WeightMap = std::map<std::string, at::Tensor>;

struct LoadOptions {
  std::string device = "cpu";           // "cpu" or "cuda:N"
  at::ScalarType dtype = at::kFloat;    // floating-point weights are converted to it once, at load
};

// A loaded SD1.x checkpoint. Immutable once built: jobs share it through a shared_ptr.
struct Sd1Weights {
  std::string filename;  // below models/Stable-diffusion
  std::string title;     // WebUI title: "filename [sha256[:10]]"
  std::string sha256;
  Layout layout;
  Sd1Config config;
  WeightMap unet;          // names below model.diffusion_model.
  WeightMap vae;           // names below first_stage_model. (from the checkpoint or the VAE file)
  WeightMap text_encoder;  // names below cond_stage_model.transformer., text_model.* naming
  at::Tensor alphas_cumprod;  // float32 [timesteps]: the file's (as stored, possibly F16-rounded) or computed
  std::string vae_source = "checkpoint";  // or the VAE file name
  std::string device;
  at::ScalarType dtype = at::kFloat;
  std::int64_t resident_bytes = 0;
  double load_seconds = 0;
};

// Reads, identifies, configures (yaml/metadata/defaults, checked) and converts a checkpoint. `vae_file`
// (optional) replaces the checkpoint's VAE. Errors name the file and what is wrong.
absl::StatusOr<std::shared_ptr<const Sd1Weights>> LoadSd1Checkpoint(const std::filesystem::path& path,
                                                                    const std::string& filename,
                                                                    const std::filesystem::path& vae_file,
                                                                    const LoadOptions& options);

// The VAE weights of a standalone VAE file (models/VAE), names without first_stage_model., checked against
// `config`. WebUI drops "loss*" and "model_ema.*" keys.
absl::StatusOr<WeightMap> LoadVaeFile(const std::filesystem::path& path, const VaeConfig& config,
                                      const LoadOptions& options);

// The VAE of an SD1.x checkpoint alone (first_stage_model.*, prefix removed), converted as LoadSd1Checkpoint does.
absl::StatusOr<WeightMap> LoadCheckpointVae(const std::filesystem::path& path, const LoadOptions& options);

// Bytes of the UNet, VAE and text-encoder tensors.
std::int64_t ResidentBytes(const Sd1Weights& weights);

// DDPM.register_schedule's alphas_cumprod for a linear-in-sqrt beta schedule, computed in float64, as float32.
at::Tensor ComputeAlphasCumprod(const ScheduleConfig& schedule);

// cumprod(1 - linspace(beta_start, beta_end, timesteps)) in float32: the schedule sd-webui-animatediff installs on
// the model while a motion module is injected (linear betas 0.00085..0.012, not SD's scaled-linear). A job swaps it
// in for the model's alphas_cumprod; the UNet itself only sees timesteps.
at::Tensor ComputeLinearBetaAlphasCumprod(double beta_start = 0.00085, double beta_end = 0.012, int64_t timesteps = 1000);

}  // namespace atelier::engine
