// The host's definitions of the ABI's opaque handles. Internal to the host layer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "atelier/plugin.h"
#include "engine/extension/job_extension.h"
#include "engine/io/safetensors.h"
#include "host/job_sink.h"

namespace atelier::host {

// A finished image or frame on its way to the client (atelier_frame).
struct JobFrame {
  int index = 0;
  std::int64_t seed = 0, subseed = 0;
  std::string infotext;
  at::Tensor image;  // float32 [3, H, W] in [0, 1], CPU
  bool interrupted = false;
};
// Where frames leave the plugin chain (the job layer encodes and sends them).
using FrameSink = std::function<absl::Status(const JobFrame& frame)>;

// What the job-scoped host functions need from the job's plugins (JobHooks implements it).
class JobPluginServices {
 public:
  virtual ~JobPluginServices() = default;
  virtual absl::Status AddInfotext(int image_index, const std::string& key, const std::string& value) = 0;
  virtual absl::Status FeedPlugin(const std::string& from, const std::string& plugin, const std::string& args_json) = 0;
  virtual absl::Status PushFrame(const atelier_job* from, const JobFrame& frame) = 0;
  // 1.4: the running batch's next noise draw (during init_latent / sample), another plugin's alwayson_scripts value.
  virtual absl::StatusOr<at::Tensor> NextNoise() = 0;
  virtual absl::StatusOr<std::string> ScriptArgs(const std::string& plugin) = 0;
};

// Runs another plugin's invoke within a job (call_plugin): plugin, method, arguments -> its JSON result.
using PluginCaller =
    std::function<absl::StatusOr<std::string>(const std::string& plugin, const std::string& method,
                                              const std::string& args_json)>;

}  // namespace atelier::host

// One per (job, participating plugin), or per invoke: job-scoped host functions know which plugin calls them.
struct atelier_job {
  atelier::host::JobSink* sink = nullptr;
  std::string plugin_name;
  // The job's plugins (null for an invoke outside a generation): add_infotext, push_frame, feed_plugin.
  atelier::host::JobPluginServices* hooks = nullptr;
  // call_plugin.
  atelier::host::PluginCaller call_plugin;
  // vae_encode (generations only).
  std::function<absl::StatusOr<at::Tensor>(const at::Tensor& image)> vae_encode;
  // text_condition (generations only): a prompt -> [tokens, hidden].
  std::function<absl::StatusOr<at::Tensor>(const std::string& prompt)> text_condition;
  // The invoke's JSON result (set_invoke_result).
  std::string invoke_result;
};

// A safetensors file (memory-mapped views) or the tensors of a pickle (owned, read by the non-executing reader).
struct atelier_tensor_file {
  std::shared_ptr<const atelier::engine::SafetensorsFile> file;
  std::string label;
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // pickles only
};

// The rest of one model call's chain (model_call_next).
struct atelier_model_call {
  std::function<absl::StatusOr<at::Tensor>(const atelier_model_call_args& args)> next;
};

// The rest of one sampling pass (sample_next): noise -> the pass's latents.
struct atelier_sample_call {
  std::function<absl::StatusOr<atelier::engine::SampledPass>(const at::Tensor& noise)> next;
};
