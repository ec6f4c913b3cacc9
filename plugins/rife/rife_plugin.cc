// rife: frame interpolation with Practical-RIFE's IFNet (4.6, 4.25/4.26) from models/RIFE (flownet.pkl through the
// non-executing pickle reader, or safetensors). In a job it sits after the frames are decoded (`frame` hook): the
// frames between each pair are made and streamed before the later frame, so n frames become (n-1)*N+1, each pushed
// with progress. Enabled by
//   "alwayson_scripts": {"rife": {"args": [{"enabled": true, "multiplier": 2}]}}
// or AnimateDiff-style {"interp": "RIFE", "interp_x": 10} (sd-webui-animatediff's frame count). Stand-alone:
// Plugins.Invoke rife "interpolate" {"images": [base64...], "multiplier": 4}, frames streamed back.
// ATELIER_RIFE_MAX_MULTIPLIER (default 16) bounds the multiplier.
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "atelier/sdk/args.h"
#include "atelier/sdk/descriptor.h"
#include "atelier/sdk/host.h"
#include "atelier/sdk/status.h"
#include "atelier/sdk/tensor.h"
#include "atelier/sdk/tensor_file.h"
#include "rife_model.h"
#include "rife_options.h"
#include "rife_sequence.h"

namespace {

namespace sdk = atelier::sdk;
namespace rf = atelier::rife;
using nlohmann::json;

struct PluginState {
  const atelier_host_api* host = nullptr;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;  // the daemon's compute dtype (float16 on CUDA, bfloat16 when chosen)
  int max_multiplier = 16;
  std::mutex mu;
  std::map<std::string, std::shared_ptr<rf::RifeModel>> models;  // by file name
};
PluginState* Plugin(atelier_plugin_state* s) { return reinterpret_cast<PluginState*>(s); }

using rf::Options;
using rf::ParseOptions;

// The model named (a file in models/RIFE, with or without its extension; default: the first there).
absl::StatusOr<std::shared_ptr<rf::RifeModel>> LoadModel(PluginState& ps, const std::string& wanted) {
  atelier_bytes bytes{};
  atelier_error err{};
  if (atelier_status s = ps.host->model_list(ps.host, ATELIER_FOLDER_RIFE, &bytes, &err); s != ATELIER_OK) {
    return sdk::FromAbi(s, err);
  }
  const json list = json::parse(std::string(reinterpret_cast<const char*>(bytes.data), bytes.size), nullptr, false);
  ps.host->bytes_free(&bytes);
  std::string file, names;
  for (const auto& e : list) {
    const std::string f = e.value("filename", ""), n = e.value("name", "");
    names += (names.empty() ? "" : ", ") + f;
    if (file.empty() && (wanted.empty() || absl::AsciiStrToLower(f) == absl::AsciiStrToLower(wanted) ||
                         absl::AsciiStrToLower(n) == absl::AsciiStrToLower(wanted))) {
      file = f;
    }
  }
  if (file.empty()) {
    return absl::NotFoundError(wanted.empty()
                                   ? std::string("no RIFE model in models/RIFE (put Practical-RIFE's flownet.pkl there)")
                                   : absl::StrCat("RIFE model '", wanted.substr(0, 64), "' not found; models: ",
                                                  names.empty() ? "none" : names));
  }
  {
    std::lock_guard<std::mutex> lock(ps.mu);
    auto it = ps.models.find(file);
    if (it != ps.models.end()) return it->second;
  }
  auto raw = sdk::ReadTensorFile(ps.host, ATELIER_FOLDER_RIFE, file);
  if (!raw.ok()) return raw.status();
  auto model = rf::RifeModel::Create(*raw, file, ps.device, ps.dtype);
  if (!model.ok()) return model.status();
  std::shared_ptr<rf::RifeModel> shared = std::move(*model);
  std::lock_guard<std::mutex> lock(ps.mu);
  ps.models[file] = shared;
  return shared;
}

struct JobState {
  atelier_job* job = nullptr;
  Options options;
  std::shared_ptr<rf::RifeModel> model;
  std::unique_ptr<rf::FrameInterpolator> interpolator;
  int expected_frames = 0;
  int made = 0;
  int64_t seed = 0, subseed = 0;
  std::string infotext;
};
JobState* Job(atelier_job_state* s) { return reinterpret_cast<JobState*>(s); }

atelier_status Init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    if (!ATELIER_HAS_FIELD(host, atelier_host_api, model_list)) {
      return absl::FailedPreconditionError("needs a host with plugin ABI 1.2 (model_list)");
    }
    auto s = std::make_unique<PluginState>();
    s->host = host;
    s->device = sdk::HostDevice(host);
    s->dtype = sdk::HostComputeDtype(host);
    if (const char* v = std::getenv("ATELIER_RIFE_MAX_MULTIPLIER"); v != nullptr && std::atoi(v) >= 2) {
      s->max_multiplier = std::atoi(v);
    }
    *state = reinterpret_cast<atelier_plugin_state*>(s.release());
    return absl::OkStatus();
  });
}

void Finalize(atelier_plugin_state* state) { delete Plugin(state); }

atelier_status Process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info, const char* args_json,
                       atelier_job_state** job_state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    auto args = sdk::Args::Parse(args_json);
    if (!args.ok()) return args.status();
    const auto units = args->Units({"enabled", "multiplier"});
    if (units.empty()) return absl::OkStatus();
    auto options = ParseOptions(units[0], ps.max_multiplier);
    if (!options.ok()) return options.status();
    if (!options->enabled) return absl::OkStatus();
    auto model = LoadModel(ps, options->model);
    if (!model.ok()) return model.status();
    auto js = std::make_unique<JobState>();
    js->job = job;
    js->options = *options;
    js->model = *model;
    js->expected_frames = info->batch_size * info->n_iter;
    const std::string value = options->interp_x > 0 ? absl::StrCat((*model)->version(), " interp_x ", options->interp_x)
                                                    : absl::StrCat((*model)->version(), " x", options->multiplier);
    atelier_error e{};
    if (atelier_status s = ps.host->add_infotext(job, -1, "RIFE", value.c_str(), &e); s != ATELIER_OK) {
      return sdk::FromAbi(s, e);
    }
    *job_state = reinterpret_cast<atelier_job_state*>(js.release());
    return absl::OkStatus();
  });
}

void JobEnd(atelier_plugin_state*, atelier_job_state* job_state) { delete Job(job_state); }

// The job's final frame count (AnimateDiff sets the batch to the video length in its shape_job, earlier in order).
atelier_status ShapeJob(atelier_plugin_state*, atelier_job_state* job_state, atelier_job_shape* shape, atelier_error*) {
  Job(job_state)->expected_frames = shape->batch_size * shape->n_iter;
  return ATELIER_OK;
}

rf::FrameInterpolator& Interpolator(JobState& js) {
  if (!js.interpolator) {
    rf::SequenceOptions o;
    o.gap_frames = js.options.interp_x > 0 ? rf::AnimateDiffGapFrames(js.expected_frames, js.options.interp_x)
                                           : rf::GapFrames(js.options.multiplier);
    o.scale = js.options.scale;
    o.scene_threshold = js.options.scene_threshold;
    js.interpolator = std::make_unique<rf::FrameInterpolator>(*js.model, o);
  }
  return *js.interpolator;
}

// Pushes each new frame on (it reaches the client before the frame being processed).
rf::FrameInterpolator::Emit PushNew(const PluginState& ps, JobState& js) {
  return [&ps, &js](const at::Tensor& frame, bool interpolated, bool) -> absl::Status {
    if (!interpolated) return absl::OkStatus();  // the input frame itself passes on through the hook
    if (ps.host->is_cancelled(js.job)) return absl::CancelledError("rife: cancelled");
    const at::Tensor image = frame[0].clamp(0, 1).contiguous();
    sdk::Borrow b(image);
    atelier_frame f{};
    f.struct_size = sizeof(f);
    f.index = js.made;
    f.seed = js.seed;
    f.subseed = js.subseed;
    f.infotext = js.infotext.c_str();
    f.image = b.get();
    atelier_error e{};
    if (atelier_status s = ps.host->push_frame(js.job, &f, &e); s != ATELIER_OK) return sdk::FromAbi(s, e);
    ++js.made;
    ps.host->report_progress(js.job, "interpolating", js.made, 0, nullptr, &e);
    return absl::OkStatus();
  };
}

atelier_status Frame(atelier_plugin_state* state, atelier_job_state* job_state, atelier_frame_params* params,
                     atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState& js = *Job(job_state);
    const at::Tensor image = sdk::View(params->frame->image).unsqueeze(0).clone();
    auto status = Interpolator(js).Add(image, PushNew(ps, js));
    // The frames between the previous image and this one carry the previous image's seed and infotext.
    js.seed = params->frame->seed;
    js.subseed = params->frame->subseed;
    js.infotext = params->frame->infotext != nullptr ? params->frame->infotext : "";
    return status;
  });
}

atelier_status FramesFinish(atelier_plugin_state* state, atelier_job_state* job_state,
                            const atelier_frames_finish_params* params, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState& js = *Job(job_state);
    if (!js.options.loop || params->interrupted || !js.interpolator) return absl::OkStatus();
    return js.interpolator->CloseLoop(PushNew(*Plugin(state), js));
  });
}

atelier_status Invoke(atelier_plugin_state* state, atelier_job* job, const char* method, const char* args_json,
                      atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    const std::string m = method != nullptr ? method : "";
    if (m != "interpolate") {
      return absl::UnimplementedError(absl::StrCat("unknown method '", m.substr(0, 64), "'; methods: interpolate"));
    }
    json a = json::parse(args_json != nullptr ? args_json : "null", nullptr, false);
    if (!a.is_object()) return absl::InvalidArgumentError("rife: the arguments must be a JSON object");
    a["enabled"] = true;
    auto options = ParseOptions(a, ps.max_multiplier);
    if (!options.ok()) return options.status();
    const json images = a.value("images", json::array());
    if (!images.is_array() || images.size() < 2) {
      return absl::InvalidArgumentError("rife: give at least two frames (\"images\": [base64, ...])");
    }
    auto model = LoadModel(ps, options->model);
    if (!model.ok()) return model.status();
    rf::SequenceOptions so;
    so.gap_frames = rf::GapFrames(options->multiplier);
    so.scale = options->scale;
    so.scene_threshold = options->scene_threshold;
    rf::FrameInterpolator interp(**model, so);
    int index = 0;
    const int total = static_cast<int>((images.size() - 1) * options->multiplier + 1 + (options->loop ? options->multiplier - 1 : 0));
    auto emit = [&](const at::Tensor& frame, bool, bool) -> absl::Status {
      if (ps.host->is_cancelled(job)) return absl::CancelledError("rife: cancelled");
      const at::Tensor image = frame[0].clamp(0, 1).contiguous();
      sdk::Borrow b(image);
      atelier_error e{};
      if (atelier_status s = ps.host->emit_frame(job, index, b.get(), &e); s != ATELIER_OK) return sdk::FromAbi(s, e);
      ++index;
      ps.host->report_progress(job, "interpolating", index, total, nullptr, &e);
      return absl::OkStatus();
    };
    for (size_t i = 0; i < images.size(); ++i) {
      std::string bytes;
      if (!images[i].is_string() || !absl::Base64Unescape(images[i].get<std::string>(), &bytes) || bytes.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("rife: frame ", i, " is not base64 image data"));
      }
      DLManagedTensor* decoded = nullptr;
      atelier_error e{};
      if (atelier_status s = ps.host->image_decode(ps.host, bytes.data(), bytes.size(), &decoded, &e); s != ATELIER_OK) {
        return absl::InvalidArgumentError(absl::StrCat("rife: frame ", i, " cannot be decoded: ", e.message));
      }
      const at::Tensor hwc = sdk::Adopt(decoded).narrow(2, 0, 3);
      const at::Tensor frame = hwc.permute({2, 0, 1}).to(at::kFloat).div(255.0).unsqueeze(0).contiguous();
      if (auto s = interp.Add(frame, emit); !s.ok()) return s;
    }
    if (options->loop) {
      if (auto s = interp.CloseLoop(emit); !s.ok()) return s;
    }
    atelier_error e{};
    const std::string result = json{{"frames", index}, {"scene_cuts", interp.cuts()}, {"model", (*model)->version()}}.dump();
    return sdk::FromAbi(ps.host->set_invoke_result(job, result.c_str(), &e), e);
  });
}

constexpr const char* kSchema = R"json({
  "type": "object",
  "description": "{\"args\": [{\"enabled\": true, \"multiplier\": 2}]} or AnimateDiff's {\"interp\": \"RIFE\", \"interp_x\": 10}",
  "properties": {"args": {"type": "array", "items": {"$ref": "#/definitions/options"}}},
  "definitions": {
    "options": {
      "type": "object",
      "properties": {
        "enabled": {"type": "boolean", "default": false},
        "multiplier": {"type": "integer", "minimum": 2, "default": 2, "description": "n frames -> (n-1)*N+1"},
        "interp": {"enum": ["Off", "RIFE", "FILM"], "description": "sd-webui-animatediff's choice (FILM: unavailable)"},
        "interp_x": {"type": "integer", "minimum": 2, "default": 10},
        "scale": {"enum": [0.25, 0.5, 1.0, 2.0, 4.0], "default": 1.0},
        "scene_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.2},
        "loop": {"type": "boolean", "default": false},
        "model": {"type": "string", "description": "a file in models/RIFE (default: the first)"}
      }
    }
  }
})json";

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                                        uint32_t host_abi_minor) {
  static const atelier_plugin_descriptor descriptor = [] {
    atelier_plugin_descriptor d = sdk::Descriptor("rife", "1.0.0", 800);
    d.description = "RIFE frame interpolation (Practical-RIFE 4.6, 4.25/4.26): after an animation or stand-alone";
    d.params_schema_json = kSchema;
    d.init = Init;
    d.finalize = Finalize;
    d.process = Process;
    d.job_end = JobEnd;
    d.shape_job = ShapeJob;
    d.frame = Frame;
    d.frames_finish = FramesFinish;
    d.invoke = Invoke;
    return d;
  }();
  return host_abi_major == ATELIER_PLUGIN_ABI_MAJOR && host_abi_minor >= 2 ? &descriptor : nullptr;
}
