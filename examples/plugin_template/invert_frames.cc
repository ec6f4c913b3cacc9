// plugin_template: a minimal Atelier plugin on the C++ SDK, the starting point for writing your own.
//
// It implements one hook, `frame` (ABI 1.1): every finished image of a job passes through it as soon as it is
// decoded, and it inverts the colours: out = x + s * (1 - 2x), so strength s = 1 gives a full negative and s = 0.5
// a flat grey. It also records itself in the images' infotext ("Invert: 1.0"). It takes part in a job only when
// the request enables it, WebUI-style:
//   "alwayson_scripts": {"invert": {"args": [{"enabled": true, "strength": 1.0}]}}
// or positionally: {"invert": {"args": [true, 1.0]}}.
//
// The binary contract is the C header (atelier/plugin.h); the SDK (plugins/sdk) gives at::Tensor views of the
// DLPack tensors without copies, argument parsing and status helpers, and stamps the descriptor with the engine ABI
// it links. A plugin that needs no libtorch can use the C header alone: see examples/c_plugin.
#include <new>
#include <string>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "atelier/sdk/args.h"
#include "atelier/sdk/descriptor.h"
#include "atelier/sdk/status.h"
#include "atelier/sdk/tensor.h"
#include "engine/pipeline/infotext.h"

namespace {

namespace sdk = atelier::sdk;

// What the plugin keeps between jobs (from init to finalize).
struct PluginState {
  const atelier_host_api* host;
};

// What the plugin keeps for one job (from process to job_end).
struct JobState {
  atelier_job* job;
  double strength;
};

constexpr const char* kSchema = R"({
  "type": "object",
  "properties": {
    "args": {
      "type": "array",
      "description": "[{enabled, strength}] or [enabled, strength]",
      "items": [{"type": ["object", "boolean"]}, {"type": "number"}]
    }
  },
  "definitions": {
    "unit": {
      "type": "object",
      "properties": {
        "enabled": {"type": "boolean", "default": false},
        "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 1}
      }
    }
  }
})";

PluginState* Plugin(atelier_plugin_state* s) { return reinterpret_cast<PluginState*>(s); }
JobState* Job(atelier_job_state* s) { return reinterpret_cast<JobState*>(s); }

atelier_status Init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  auto* s = new (std::nothrow) PluginState{host};
  if (s == nullptr) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  host->log(host, ATELIER_LOG_DEBUG, "ready");
  *state = reinterpret_cast<atelier_plugin_state*>(s);
  return ATELIER_OK;
}

void Finalize(atelier_plugin_state* state) { delete Plugin(state); }

atelier_status Process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info*, const char* args_json,
                       atelier_job_state** job_state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    auto args = sdk::Args::Parse(args_json);
    if (!args.ok()) return args.status();
    const auto units = args->Units({"enabled", "strength"});
    if (units.empty()) return absl::OkStatus();
    auto enabled = sdk::Args::Field<bool>(units[0], "enabled", false);
    if (!enabled.ok()) return enabled.status();
    auto strength = sdk::Args::Field<double>(units[0], "strength", 1.0);
    if (!strength.ok()) return strength.status();
    if (!*enabled) return absl::OkStatus();  // *job_state stays NULL: not part of this job
    if (!(*strength >= 0.0 && *strength <= 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat("strength ", *strength, " is outside [0, 1]"));
    }
    const atelier_host_api* host = Plugin(state)->host;
    atelier_error add_err{};
    const std::string value = atelier::engine::PythonFloat(*strength);  // as WebUI prints it: "1.0"
    if (atelier_status s = host->add_infotext(job, -1, "Invert", value.c_str(), &add_err); s != ATELIER_OK) {
      return sdk::FromAbi(s, add_err);
    }
    *job_state = reinterpret_cast<atelier_job_state*>(new JobState{job, *strength});
    return absl::OkStatus();
  });
}

void JobEnd(atelier_plugin_state*, atelier_job_state* job_state) { delete Job(job_state); }

// Each image as it is decoded: float32 [3, H, W] in [0, 1] on the CPU, borrowed for the call.
atelier_status Frame(atelier_plugin_state*, atelier_job_state* job_state, atelier_frame_params* params,
                     atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    // Cheap per-image work runs even for a cancelled job: the interrupted image still reaches the client.
    const JobState* js = Job(job_state);
    const at::Tensor x = sdk::View(params->frame->image);  // no copy
    params->image_out = sdk::Export(x + js->strength * (1.0 - 2.0 * x));  // the host owns it now
    return absl::OkStatus();
  });
}

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                                        uint32_t) {
  static const atelier_plugin_descriptor descriptor = [] {
    atelier_plugin_descriptor d = sdk::Descriptor("invert", "1.1.0");
    d.description = "Template plugin: inverts the colours of the job's images as they are made (frame)";
    d.params_schema_json = kSchema;
    d.init = Init;
    d.finalize = Finalize;
    d.process = Process;
    d.job_end = JobEnd;
    d.frame = Frame;
    return d;
  }();
  return host_abi_major == ATELIER_PLUGIN_ABI_MAJOR ? &descriptor : nullptr;
}
