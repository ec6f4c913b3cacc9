// One job's plugins: calls their hooks over the C ABI, converting between at::Tensor and DLPack and plugin errors to
// absl::Status. It is the engine's JobExtension for the job (engine/extension/job_extension.h), so the sampler and
// the pipeline reach the plugins through it and nothing else; the job layer drives the rest (process, streamed
// frames, the 1.0 whole-job frame hooks, job_end). Participants are called in hook order: ascending priority, then
// name. All calls happen on the executor thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "atelier/plugin.h"
#include "atelier/sdk/tensor.h"
#include "engine/extension/job_extension.h"
#include "host/abi_handles.h"
#include "host/job_sink.h"
#include "host/plugin_registry.h"

namespace atelier::host {

// The job's settings as plugins see them in `process` (atelier_job_info).
struct JobHookInfo {
  std::string job_id;
  bool img2img = false;
  int width = 0, height = 0, batch_size = 1, n_iter = 1, steps = 0;
  std::int64_t seed = -1, subseed = -1;
  double subseed_strength = 0;
  double cfg_scale = 0, denoising_strength = 0;
  std::string prompt, negative_prompt, sampler_name, scheduler;
  int clip_skip = 1;
  bool hires = false;
  int hires_width = 0, hires_height = 0;
  at::Tensor init_image;  // uint8 [H, W, 3] CPU, or undefined
  at::Tensor mask;        // uint8 [H, W] CPU, or undefined
  bool inpaint_full_res = false;
  std::string checkpoint_title;
  int resize_mode = 0;    // img2img's WebUI resize_mode
  std::string loras_json = "[]";  // the job's LoRA networks (atelier_job_info.loras_json)
  // The job's VAE encoder for vae_encode: float [n, 3, H, W] in [0, 1] -> scaled latents. Empty: unsupported.
  std::function<absl::StatusOr<at::Tensor>(const at::Tensor& image)> vae_encode;
  // The job's text conditioning for text_condition: a prompt -> [tokens, hidden]. Empty: unsupported.
  std::function<absl::StatusOr<at::Tensor>(const std::string& prompt)> text_condition;
};

// Inputs of WebUI's on_cfg_denoiser; plugins may replace x, sigma and the conditioning.
using CfgDenoiserTensors = engine::CfgDenoiserInputs;

class JobHooks final : public engine::JobExtension, public JobPluginServices {
 public:
  // Calls `process` of every plugin that has it, in hook order, with the JSON of its alwayson_scripts value ("null"
  // when absent; what an earlier plugin fed it with feed_plugin, when it did). `args_by_plugin` is keyed by
  // lower-case plugin name. The first plugin error fails the job (plugins that had already joined get job_end).
  static absl::StatusOr<std::unique_ptr<JobHooks>> Begin(const PluginRegistry& registry, JobSink* sink,
                                                         const JobHookInfo& info,
                                                         const std::map<std::string, std::string>& args_by_plugin);
  // Calls job_end of every participant, in reverse hook order.
  ~JobHooks() override;
  // 1.2: the self_attention and unet_block_end hooks of the participants, in hook order (contexts concatenated).
  absl::StatusOr<engine::SelfAttentionExtra> SelfAttention(int layer, int cond_rows, const at::Tensor& hidden);
  absl::Status UnetBlockEnd(int block_kind, int block_index, int cond_rows, at::Tensor& hidden);
  JobHooks(const JobHooks&) = delete;
  JobHooks& operator=(const JobHooks&) = delete;

  // Names of the plugins taking part in this job, in hook order.
  std::vector<std::string> Participants() const;
  // Whether any participant has the hook: callers skip all tensor work when not (zero cost without plugins).
  bool HasCfgHooks() const { return has_cfg_; }
  bool HasUnetResiduals() const { return has_residuals_; }
  bool HasUnetBlock() const { return has_block_; }
  bool HasPostprocessFrames() const { return has_postprocess_; }
  bool HasExport() const { return has_export_; }
  // 1.1 streamed frames (frame / frames_finish).
  bool HasFrameHooks() const { return has_frame_; }

  // ---- engine::JobExtension: the points the participants' hooks need ----
  Points points() const override;
  absl::Status ShapeJob(engine::JobShape& shape) override;
  absl::Status OverrideSchedule(at::Tensor& alphas_cumprod) override;
  absl::Status PassStarted(const engine::PassInfo& pass) override;
  absl::Status InitLatent(const engine::PassInfo& pass, at::Tensor& init_latent,
                          const engine::NoiseDraw& next_noise) override;
  // The 1.4 sample wrappers, outermost first, then `next`.
  absl::StatusOr<engine::SampledPass> Sample(const engine::PassInfo& pass, const at::Tensor& noise,
                                             const at::Tensor& alphas_cumprod, const engine::SampleNext& next,
                                             const engine::NoiseDraw& next_noise) override;
  absl::Status BeforeModel(engine::CfgDenoiserInputs& inputs) override { return CfgDenoiser(inputs); }
  // The 1.1 model_call wrappers (outermost first), then the residuals and block hooks, then `next`.
  absl::StatusOr<at::Tensor> CallModel(engine::ModelCall& call, const engine::ModelCallNext& next) override;
  absl::Status AfterModel(int sampling_step, int total_sampling_steps, int cond_rows, at::Tensor& x) override {
    return CfgDenoised(sampling_step, total_sampling_steps, cond_rows, x);
  }
  absl::Status AfterCfg(int sampling_step, int total_sampling_steps, at::Tensor& x) override {
    return CfgAfterCfg(sampling_step, total_sampling_steps, x);
  }
  void InfotextAdditions(int index, std::vector<std::pair<std::string, std::string>>& extra) const override;

  // ---- The C hooks one by one ----
  absl::Status CfgDenoiser(CfgDenoiserTensors& tensors);
  absl::Status CfgDenoised(int sampling_step, int total_sampling_steps, int cond_rows, at::Tensor& x);
  absl::Status CfgAfterCfg(int sampling_step, int total_sampling_steps, at::Tensor& x);
  // Adds every participant's residuals into `residuals` (undefined entries mean zero).
  absl::Status UnetResiduals(int sampling_step, int total_sampling_steps, int cond_rows, const at::Tensor& x,
                             const at::Tensor& timesteps, const at::Tensor& context, const at::Tensor& batch_rows,
                             std::array<at::Tensor, ATELIER_UNET_RESIDUALS>& residuals);
  absl::Status UnetBlock(int point, int block_kind, int block_index, int cond_rows, at::Tensor& hidden,
                         const at::Tensor& context);

  // Streamed frames: `frame` through every participant's frame hook in order (each may replace or drop it, or push
  // frames of its own), then to `sink`.
  absl::Status SendFrame(const JobFrame& frame, const FrameSink& sink);
  // frames_finish of every participant in order (what they push still goes to `sink`). A participant's error does
  // not stop the others: it is returned in `errors`, for the job's end.
  void FinishFrames(bool interrupted, const FrameSink& sink, std::vector<absl::Status>& errors);

  // 1.0 whole-job hooks. frames: float32 [n, 3, H, W] in [0, 1] on the CPU; plugins may change n and the size.
  absl::Status PostprocessFrames(at::Tensor& frames);
  absl::Status ExportMedia(const at::Tensor& frames, const std::vector<std::string>& infotexts);

  // ---- JobPluginServices: host functions acting on this job (host_services.cc) ----
  absl::Status AddInfotext(int image_index, const std::string& key, const std::string& value) override;
  absl::Status FeedPlugin(const std::string& from, const std::string& plugin, const std::string& args_json) override;
  absl::Status PushFrame(const atelier_job* from, const JobFrame& frame) override;
  absl::StatusOr<at::Tensor> NextNoise() override;
  absl::StatusOr<std::string> ScriptArgs(const std::string& plugin) override;

 private:
  struct Participant {
    const Plugin* plugin = nullptr;
    atelier_job_state* state = nullptr;
    std::unique_ptr<atelier_job> job;
  };
  JobHooks() = default;

  // Runs `frame` through participants [first, end) and then to the current sink.
  absl::Status Deliver(size_t first, const JobFrame& frame);
  // The model_call wrappers from `first` on, then the innermost call.
  absl::StatusOr<at::Tensor> CallModelFrom(size_t first, engine::ModelCall& call, const engine::ModelCallNext& next);
  absl::StatusOr<at::Tensor> CallInnermost(engine::ModelCall& call, const engine::ModelCallNext& next);
  // The sample wrappers from `first` on.
  absl::StatusOr<engine::SampledPass> SampleFrom(size_t first, const atelier_pass_info& info, const at::Tensor& noise,
                                                 const at::Tensor& alphas_cumprod, const engine::SampleNext& next);

  const PluginRegistry* registry_ = nullptr;
  // What process was given; valid until job_end, as the header promises.
  JobHookInfo info_;
  atelier_job_info c_info_{};
  std::unique_ptr<sdk::Borrow> init_image_, mask_;
  std::vector<Participant> participants_;
  bool has_cfg_ = false, has_residuals_ = false, has_block_ = false, has_postprocess_ = false, has_export_ = false;
  bool has_attention_ = false, has_block_end_ = false;  // 1.2: self_attention, unet_block_end
  int32_t current_pass_ = 0;  // ATELIER_PASS_* of the pass running (unet_residuals' pass)
  bool has_shape_ = false, has_schedule_ = false, has_pass_ = false, has_model_call_ = false, has_frame_ = false;
  bool has_init_latent_ = false, has_sample_ = false;  // 1.4
  // next_noise: the running batch's draws, set during init_latent / sample.
  const engine::NoiseDraw* noise_draw_ = nullptr;
  // script_args: what the request gave each plugin (lower-case names).
  std::map<std::string, std::string> given_args_;
  // process phase: plugins whose process already ran (lower-case), and arguments fed by earlier plugins.
  std::vector<std::string> processed_;
  std::map<std::string, std::string> fed_args_;
  bool in_process_ = false;
  // (image index or -1, key, value), in the order added.
  std::vector<std::tuple<int, std::string, std::string>> infotext_;
  // Streamed frames: the sink and, per participant being called, where its pushed frames continue.
  const FrameSink* frame_sink_ = nullptr;
  std::map<const atelier_job*, size_t> push_from_;
  std::map<size_t, int> frames_seen_;  // per participant
};

// Plugins.Invoke: runs `plugin`'s invoke(method, args_json) with a job that serves `sink`; returns its JSON result
// ("null" when it set none). NOT_FOUND for an unknown plugin, FAILED_PRECONDITION for one without invoke.
absl::StatusOr<std::string> InvokePlugin(const PluginRegistry& registry, const std::string& plugin,
                                         const std::string& method, const std::string& args_json, JobSink* sink,
                                         JobHooks* hooks = nullptr);

}  // namespace atelier::host
