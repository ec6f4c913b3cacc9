// plugin_template: a minimal Atelier plugin, the starting point for writing your own.
//
// It implements one hook, postprocess_frames, which inverts the colours of the job's frames: out = x + s * (1 - 2x),
// so strength s = 1 gives a full negative and s = 0.5 a flat grey. It takes part in a job only when the request
// enables it, WebUI-style:
//   "alwayson_scripts": {"invert": {"args": [{"enabled": true, "strength": 1.0}]}}
// or positionally: {"invert": {"args": [true, 1.0]}}.
//
// It talks to the daemon only through atelier/plugin.h (C types, DLPack tensors); it needs no libtorch.
#include <atelier/plugin.h>

#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

// What the plugin keeps between jobs (from init to finalize).
struct PluginState {
  const atelier_host_api* host;
};

// What the plugin keeps for one job (from process to job_end).
struct JobState {
  atelier_job* job;
  float strength;
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

atelier_status Init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  auto* s = new (std::nothrow) PluginState{host};
  if (s == nullptr) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  host->log(host, ATELIER_LOG_DEBUG, "ready");
  *state = reinterpret_cast<atelier_plugin_state*>(s);
  return ATELIER_OK;
}

void Finalize(atelier_plugin_state* state) { delete reinterpret_cast<PluginState*>(state); }

// Reads {"args": [{"enabled": b, "strength": f}]}, {"args": [b, f]} or {"enabled": b, "strength": f}.
atelier_status ParseArgs(const char* args_json, bool* enabled, float* strength, atelier_error* err) {
  *enabled = false;
  *strength = 1.0f;
  const nlohmann::json args = nlohmann::json::parse(args_json, nullptr, /*allow_exceptions=*/false);
  if (args.is_discarded()) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "arguments are not valid JSON");
  if (args.is_null()) return ATELIER_OK;
  nlohmann::json unit = args;
  if (args.is_object() && args.contains("args")) {
    const auto& list = args["args"];
    if (!list.is_array()) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "\"args\" must be a list");
    if (list.empty()) return ATELIER_OK;
    if (list[0].is_object()) {
      unit = list[0];
    } else {
      unit = nlohmann::json::object();
      unit["enabled"] = list[0];
      if (list.size() > 1) unit["strength"] = list[1];
    }
  }
  if (!unit.is_object()) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "expected an object of settings");
  if (unit.contains("enabled")) {
    if (!unit["enabled"].is_boolean()) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "enabled must be true/false");
    *enabled = unit["enabled"].get<bool>();
  }
  if (unit.contains("strength")) {
    if (!unit["strength"].is_number()) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "strength must be a number");
    const double s = unit["strength"].get<double>();
    if (!(s >= 0.0 && s <= 1.0)) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "strength %g is outside [0, 1]", s);
    }
    *strength = static_cast<float>(s);
  }
  return ATELIER_OK;
}

atelier_status Process(atelier_plugin_state*, atelier_job* job, const atelier_job_info*, const char* args_json,
                       atelier_job_state** job_state, atelier_error* err) {
  bool enabled = false;
  float strength = 1.0f;
  if (atelier_status s = ParseArgs(args_json, &enabled, &strength, err); s != ATELIER_OK) return s;
  if (!enabled) return ATELIER_OK;  // *job_state stays NULL: not part of this job
  auto* js = new (std::nothrow) JobState{job, strength};
  if (js == nullptr) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  *job_state = reinterpret_cast<atelier_job_state*>(js);
  return ATELIER_OK;
}

void JobEnd(atelier_plugin_state*, atelier_job_state* job_state) { delete reinterpret_cast<JobState*>(job_state); }

// An output tensor the host will own: shape, data and the DLManagedTensor live in one allocation freed by Delete.
struct OwnedTensor {
  DLManagedTensor managed;
  int64_t shape[4];
  std::vector<float> data;
  static void Delete(DLManagedTensor* self) { delete static_cast<OwnedTensor*>(self->manager_ctx); }
};

atelier_status PostprocessFrames(atelier_plugin_state* state, atelier_job_state* job_state,
                                 atelier_frames_params* params, atelier_error* err) {
  const auto* plugin = reinterpret_cast<PluginState*>(state);
  const auto* js = reinterpret_cast<JobState*>(job_state);
  const DLTensor* in = params->frames;
  if (in->ndim != 4 || in->dtype.code != kDLFloat || in->dtype.bits != 32 || in->device.device_type != kDLCPU) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "expected float32 [n, 3, H, W] frames on the CPU");
  }
  auto* out = new (std::nothrow) OwnedTensor();
  if (out == nullptr) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  int64_t count = 1;
  int64_t contiguous[4];
  for (int d = 3; d >= 0; --d) {
    out->shape[d] = in->shape[d];
    contiguous[d] = count;
    count *= in->shape[d];
  }
  out->data.resize(static_cast<size_t>(count));
  // Inputs may be strided (strides == NULL means contiguous): walk them element by element.
  const int64_t* strides = in->strides != nullptr ? in->strides : contiguous;
  const auto* base = reinterpret_cast<const float*>(static_cast<const char*>(in->data) + in->byte_offset);
  const float s = js->strength;
  size_t i = 0;
  for (int64_t n = 0; n < in->shape[0]; ++n) {
    if (plugin->host->is_cancelled(js->job)) return delete out, atelier_fail(err, ATELIER_CANCELLED, "cancelled");
    for (int64_t c = 0; c < in->shape[1]; ++c)
      for (int64_t y = 0; y < in->shape[2]; ++y)
        for (int64_t x = 0; x < in->shape[3]; ++x) {
          const float v = base[n * strides[0] + c * strides[1] + y * strides[2] + x * strides[3]];
          out->data[i++] = v + s * (1.0f - 2.0f * v);
        }
  }
  out->managed.dl_tensor.data = out->data.data();
  out->managed.dl_tensor.device = {kDLCPU, 0};
  out->managed.dl_tensor.ndim = 4;
  out->managed.dl_tensor.dtype = {kDLFloat, 32, 1};
  out->managed.dl_tensor.shape = out->shape;
  out->managed.dl_tensor.strides = nullptr;
  out->managed.dl_tensor.byte_offset = 0;
  out->managed.manager_ctx = out;
  out->managed.deleter = &OwnedTensor::Delete;
  params->frames_out = &out->managed;  // ownership passes to the host
  return ATELIER_OK;
}

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                                        uint32_t) {
  static const atelier_plugin_descriptor descriptor = [] {
    atelier_plugin_descriptor d{};
    d.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
    d.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
    d.struct_size = sizeof(atelier_plugin_descriptor);
    d.name = "invert";
    d.version = "1.0.0";
    d.description = "Template plugin: inverts the colours of the job's frames (postprocess_frames)";
    d.params_schema_json = kSchema;
    d.init = Init;
    d.finalize = Finalize;
    d.process = Process;
    d.job_end = JobEnd;
    d.postprocess_frames = PostprocessFrames;
    return d;
  }();
  return host_abi_major == ATELIER_PLUGIN_ABI_MAJOR ? &descriptor : nullptr;
}
