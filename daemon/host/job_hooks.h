// Calls the plugins' hooks for one job, converting between at::Tensor and DLPack and plugin errors to absl::Status.
// All calls happen on the executor thread.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "atelier/plugin.h"
#include "engine/cfg_denoiser.h"
#include "host/job_sink.h"
#include "host/plugin_registry.h"

namespace atelier::host {

// The job's settings as plugins see them in `process` (atelier_job_info).
struct JobHookInfo {
  std::string job_id;
  bool img2img = false;
  int width = 0, height = 0, batch_size = 1, n_iter = 1, steps = 0;
  std::int64_t seed = -1;
  float cfg_scale = 0, denoising_strength = 0;
  std::string prompt, negative_prompt, sampler_name, scheduler;
};

// Inputs of WebUI's on_cfg_denoiser; plugins may replace x, sigma and the conditioning.
using CfgDenoiserTensors = engine::CfgHooks::DenoiserInputs;

// Also the sampler's CfgHooks: pass it to engine::Sample when HasCfgHooks() (else nullptr: no cost).
class JobHooks : public engine::CfgHooks {
 public:
  // Calls `process` of every plugin that has it, with the JSON of its alwayson_scripts value ("null" when absent).
  // `args_by_plugin` is keyed by lower-case plugin name. The first plugin error fails the job (plugins that had
  // already joined get job_end).
  static absl::StatusOr<std::unique_ptr<JobHooks>> Begin(const PluginRegistry& registry, JobSink* sink,
                                                         const JobHookInfo& info,
                                                         const std::map<std::string, std::string>& args_by_plugin);
  // Calls job_end of every participant.
  ~JobHooks() override;
  JobHooks(const JobHooks&) = delete;
  JobHooks& operator=(const JobHooks&) = delete;

  // Names of the plugins taking part in this job.
  std::vector<std::string> Participants() const;
  // Whether any participant has the hook: callers skip all tensor work when not (zero cost without plugins).
  bool HasCfgHooks() const { return has_cfg_; }
  bool HasUnetResiduals() const { return has_residuals_; }
  bool HasUnetBlock() const { return has_block_; }
  bool HasPostprocessFrames() const { return has_postprocess_; }
  bool HasExport() const { return has_export_; }

  absl::Status CfgDenoiser(CfgDenoiserTensors& tensors);
  absl::Status CfgDenoised(int sampling_step, int total_sampling_steps, int cond_rows, at::Tensor& x);
  absl::Status CfgAfterCfg(int sampling_step, int total_sampling_steps, at::Tensor& x);

  // engine::CfgHooks
  absl::Status BeforeModel(DenoiserInputs& inputs) override { return CfgDenoiser(inputs); }
  absl::Status AfterModel(int sampling_step, int total_sampling_steps, int cond_rows, at::Tensor& x) override {
    return CfgDenoised(sampling_step, total_sampling_steps, cond_rows, x);
  }
  absl::Status AfterCfg(int sampling_step, int total_sampling_steps, at::Tensor& x) override {
    return CfgAfterCfg(sampling_step, total_sampling_steps, x);
  }
  // Adds every participant's residuals into `residuals` (undefined entries mean zero).
  absl::Status UnetResiduals(int sampling_step, int total_sampling_steps, int cond_rows, const at::Tensor& x,
                             const at::Tensor& timesteps, const at::Tensor& context,
                             std::array<at::Tensor, ATELIER_UNET_RESIDUALS>& residuals);
  absl::Status UnetBlock(int point, int block_kind, int block_index, int cond_rows, at::Tensor& hidden,
                         const at::Tensor& context);
  // frames: float32 [n, 3, H, W] in [0, 1] on the CPU; plugins may change n and the size.
  absl::Status PostprocessFrames(at::Tensor& frames);
  absl::Status ExportMedia(const at::Tensor& frames, const std::vector<std::string>& infotexts);

 private:
  struct Participant {
    const Plugin* plugin = nullptr;
    atelier_job_state* state = nullptr;
    std::unique_ptr<atelier_job> job;
  };
  JobHooks() = default;

  std::vector<Participant> participants_;
  bool has_cfg_ = false, has_residuals_ = false, has_block_ = false, has_postprocess_ = false, has_export_ = false;
};

}  // namespace atelier::host
