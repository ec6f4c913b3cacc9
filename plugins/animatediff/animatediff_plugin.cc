// animatediff: sd-webui-animatediff on the plugin ABI. A job with
//   "alwayson_scripts": {"AnimateDiff": {"args": [{"enable": true, "model": "mm_sd15_v3.safetensors",
//                                                  "video_length": 16, "batch_size": 16, "format": ["GIF", "MP4"]}]}}
// becomes one video: the batch is the video's frames (shape_job; seeds seed + i), the noise schedule is the linear-
// beta one while the module is in (schedule), every UNet call runs as context windows of `batch_size` frames over
// the video, cond and uncond rows together, the last window writing a frame (model_call), and the motion module runs
// at the UNet's 21 block points (unet_block); v1 modules normalise each window's frames jointly. Frames stream to the
// client as they are decoded (the job layer's frames); `format` and `fps` go to the export plugin and
// `interp: "RIFE"` with `interp_x` to the rife plugin (feed_plugin). The infotext key "AnimateDiff" is the
// extension's. Modules come from models/AnimateDiff (and a WebUI install's extensions/sd-webui-animatediff/model).
// Also as the extension: FreeInit (sample), img2img per-frame latents and last_frame (init_latent), ControlNet units
// without an image fed the frames of video_source / video_path (script_args + feed_plugin), motion LoRAs from the
// job's networks (loras_json). ATELIER_ANIMATEDIFF_MAX_FRAMES (default 256) bounds video_length and the frames read
// from a video; ATELIER_ANIMATEDIFF_INPUT_DIRS lists the folders a request may name.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "animatediff_args.h"
#include "atelier/sdk/args.h"
#include "atelier/sdk/descriptor.h"
#include "atelier/sdk/host.h"
#include "atelier/sdk/image.h"
#include "atelier/sdk/status.h"
#include "atelier/sdk/tensor.h"
#include "atelier/sdk/tensor_file.h"
#include "context_schedule.h"
#include "engine/pipeline/img2img_resize.h"
#include "freeinit.h"
#include "i2v_latent.h"
#include "motion_lora.h"
#include "motion_module.h"
#include "prompt_travel.h"
#include "video_frames.h"

namespace {

namespace sdk = atelier::sdk;
namespace ad = atelier::animatediff;
using nlohmann::json;

struct PluginState {
  const atelier_host_api* host = nullptr;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  int max_frames = 256;
  std::mutex mu;
  std::string loaded_file;  // the module kept loaded (one at a time: they are large)
  std::shared_ptr<const ad::MotionModuleSet> loaded;
  // The last motion-LoRA patch of `loaded` (its networks and multipliers), kept for the next job with the same.
  std::string patched_key;
  std::shared_ptr<const ad::MotionModuleSet> patched;
};
PluginState* Plugin(atelier_plugin_state* s) { return reinterpret_cast<PluginState*>(s); }

struct JobState {
  atelier_job* job = nullptr;
  ad::AnimateDiffArgs args;
  std::shared_ptr<const ad::MotionModuleSet> module;
  uint64_t calls = 0;      // denoiser calls so far (the extension's step counter for the windows)
  int window_frames = 0;   // frames per video of the UNet call running now
  std::optional<ad::PromptTravel> travel;
  bool travel_closed = false;
  at::Tensor travel_cond;  // [frames, tokens, hidden], made at the first denoiser call
  // img2img: the job's size and resize mode, and the last frame (uint8 [H, W, 3]) when one was given.
  bool img2img = false;
  int width = 0, height = 0, resize_mode = 0;
  at::Tensor last_frame;
};
JobState* Job(atelier_job_state* s) { return reinterpret_cast<JobState*>(s); }

// The module file named (a file in models/AnimateDiff, with or without extension, case-insensitive).
absl::StatusOr<std::shared_ptr<const ad::MotionModuleSet>> LoadModule(PluginState& ps, const std::string& wanted) {
  atelier_bytes bytes{};
  atelier_error err{};
  if (atelier_status s = ps.host->model_list(ps.host, ATELIER_FOLDER_MOTION_MODULE, &bytes, &err); s != ATELIER_OK) {
    return sdk::FromAbi(s, err);
  }
  const json list = json::parse(std::string(reinterpret_cast<const char*>(bytes.data), bytes.size), nullptr, false);
  ps.host->bytes_free(&bytes);
  std::string file;
  std::vector<std::string> names;
  const std::string lower = absl::AsciiStrToLower(wanted);
  for (const auto& e : list) {
    const std::string f = e.value("filename", ""), n = e.value("name", "");
    names.push_back(f);
    if (file.empty() && (absl::AsciiStrToLower(f) == lower || absl::AsciiStrToLower(n) == lower)) file = f;
  }
  if (file.empty()) {
    return absl::NotFoundError(absl::StrCat("AnimateDiff motion module '", wanted.substr(0, 64),
                                            "' not found in models/AnimateDiff; modules: ",
                                            names.empty() ? "none" : absl::StrJoin(names, ", ")));
  }
  std::lock_guard<std::mutex> lock(ps.mu);
  if (ps.loaded_file == file && ps.loaded) return ps.loaded;
  ps.loaded.reset();  // the previous module's memory goes before the next one is read
  ps.loaded_file.clear();
  ps.patched.reset();
  ps.patched_key.clear();
  auto tensors = sdk::ReadTensorFile(ps.host, ATELIER_FOLDER_MOTION_MODULE, file);
  if (!tensors.ok()) return tensors.status();
  auto set = ad::MotionModuleSet::FromTensors(*std::move(tensors), file, ps.device, ps.dtype);
  if (!set.ok()) return set.status();
  ps.loaded = std::shared_ptr<const ad::MotionModuleSet>(*std::move(set));
  ps.loaded_file = file;
  return ps.loaded;
}

// ---- Video to video: ControlNet units without an image get the frames of video_source / video_path ----

// Folders a request may name (video_path, a video_source path): ATELIER_ANIMATEDIFF_INPUT_DIRS, ':'-separated.
std::vector<std::string> InputDirs() {
  const char* v = std::getenv("ATELIER_ANIMATEDIFF_INPUT_DIRS");
  if (v == nullptr) return {};
  return absl::StrSplit(v, ':', absl::SkipEmpty());
}

absl::Status CheckInputPath(const std::string& field, const std::string& path) {
  const auto roots = InputDirs();
  if (ad::PathInside(path, roots)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "AnimateDiff ", field, " '", path.substr(0, 200), "' is outside the folders this daemon reads inputs from (",
      "ATELIER_ANIMATEDIFF_INPUT_DIRS: ", roots.empty() ? "none set" : absl::StrJoin(roots, ":"),
      "); send the video itself as base64 in video_source"));
}

// Decodes a folder's image file with the host's decoder; errors name the field and the file.
std::function<absl::StatusOr<at::Tensor>(const std::string&, const std::string&)> FileDecoder(const PluginState& ps,
                                                                                           std::string field) {
  return [&ps, field](const std::string& bytes, const std::string& name) -> absl::StatusOr<at::Tensor> {
    DLManagedTensor* image = nullptr;
    atelier_error e{};
    if (atelier_status s = ps.host->image_decode(ps.host, bytes.data(), bytes.size(), &image, &e); s != ATELIER_OK) {
      return absl::InvalidArgumentError(absl::StrCat("AnimateDiff ", field, ": ", name, " cannot be decoded: ", e.message));
    }
    return sdk::Adopt(image);
  };
}

// The video's frames (uint8 [H, W, 3]): a folder of images (video_path), or a video (video_source: base64 / a data:
// URL, or a path), through the extension's mpdecimate.
absl::StatusOr<std::vector<at::Tensor>> VideoFrames(const PluginState& ps, const ad::AnimateDiffArgs& a) {
  if (!a.video_path.empty()) {
    if (absl::Status s = CheckInputPath("video_path", a.video_path); !s.ok()) return s;
    auto frames = ad::ReadFrameFolder(a.video_path, ps.max_frames, FileDecoder(ps, "video_path"));
    if (!frames.ok()) return absl::Status(frames.status().code(), absl::StrCat("AnimateDiff video_path: ", frames.status().message()));
    return frames;
  }
  std::string bytes;
  const std::string& src = a.video_source;
  std::string unescaped;
  if (absl::StartsWith(src, "data:") || (src.size() > 256 && absl::Base64Unescape(src, &unescaped))) {
    auto b = sdk::Base64Bytes(src, "AnimateDiff video_source");
    if (!b.ok()) return b.status();
    bytes = *std::move(b);
  } else {
    if (absl::Status s = CheckInputPath("video_source", src); !s.ok()) return s;
    std::ifstream file(src, std::ios::binary);
    if (!file) return absl::NotFoundError(absl::StrCat("AnimateDiff video_source: no file '", src.substr(0, 200), "'"));
    std::stringstream data;
    data << file.rdbuf();
    bytes = data.str();
  }
  auto frames = ad::DecodeVideoFrames(bytes, ps.max_frames);
  if (!frames.ok()) return absl::Status(frames.status().code(), absl::StrCat("AnimateDiff video_source: ", frames.status().message()));
  return frames;
}

// A frame as a base64 PNG (what a ControlNet unit's batch_images holds).
absl::StatusOr<std::string> PngBase64(const PluginState& ps, const at::Tensor& rgb) {
  sdk::Borrow in(rgb);
  atelier_bytes png{};
  atelier_error e{};
  if (atelier_status s = ps.host->image_encode(ps.host, in.get(), "png", 100, nullptr, &png, &e); s != ATELIER_OK) {
    return sdk::FromAbi(s, e);
  }
  std::string out;
  absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(png.data), png.size), &out);
  ps.host->bytes_free(&png);
  return out;
}

// The extension's set_p for ControlNet (animatediff_ui.py): every enabled unit without an image takes the video's
// frames as its batch; the shortest batch of any unit bounds the video (fix_video_length: video_length and the
// context shrink to it, a default video_length becomes it) and every batch is cut to video_length.
absl::Status SetUpControlNet(const PluginState& ps, atelier_job* job, ad::AnimateDiffArgs& a) {
  atelier_bytes raw{};
  atelier_error e{};
  if (atelier_status s = ps.host->script_args(job, "controlnet", &raw, &e); s != ATELIER_OK) {
    if (a.video_source.empty() && a.video_path.empty() && a.mask_path.empty()) return absl::OkStatus();  // no ControlNet
    return absl::Status(sdk::FromAbi(s, e).code(), absl::StrCat("AnimateDiff video-to-video needs ControlNet: ", e.message));
  }
  json args = json::parse(std::string(reinterpret_cast<const char*>(raw.data), raw.size), nullptr, false);
  ps.host->bytes_free(&raw);
  json* units = args.is_object() && args.contains("args") && args["args"].is_array() ? &args["args"]
                : args.is_array()                                                    ? &args
                                                                                     : nullptr;
  if (units == nullptr) return absl::OkStatus();
  const auto enabled = [](const json& u) { return u.is_object() && u.value("enabled", false) == true; };
  const auto empty = [](const json& u, const char* key) {
    return !u.contains(key) || u[key].is_null() || (u[key].is_string() && u[key].get<std::string>().empty()) ||
           (u[key].is_array() && u[key].empty());
  };
  bool changed = false;
  if (!a.video_source.empty() || !a.video_path.empty()) {
    std::vector<std::string> frames;
    for (json& u : *units) {
      if (!enabled(u) || !empty(u, "image") || !empty(u, "input_image") || !empty(u, "batch_images")) continue;
      if (frames.empty()) {
        auto decoded = VideoFrames(ps, a);
        if (!decoded.ok()) return decoded.status();
        for (const at::Tensor& f : *decoded) {
          auto png = PngBase64(ps, f);
          if (!png.ok()) return png.status();
          frames.push_back(*std::move(png));
        }
      }
      u["batch_images"] = frames;
      changed = true;
    }
  }
  if (!a.mask_path.empty()) {
    // The extension's batch_mask_dir: the folder's masks, in name order, go with the batch items of every unit
    // that has no masks of its own.
    if (absl::Status s = CheckInputPath("mask_path", a.mask_path); !s.ok()) return s;
    auto masks = ad::ReadFrameFolder(a.mask_path, ps.max_frames, FileDecoder(ps, "mask_path"));
    if (!masks.ok()) {
      return absl::Status(masks.status().code(), absl::StrCat("AnimateDiff mask_path: ", masks.status().message()));
    }
    std::vector<std::string> encoded;
    for (json& u : *units) {
      if (!enabled(u) || empty(u, "batch_images") || !u["batch_images"].is_array()) continue;
      json& items = u["batch_images"];
      bool has_masks = false;
      for (const json& item : items) has_masks |= item.is_object() && item.contains("mask") && !item["mask"].is_null();
      if (has_masks) continue;
      if (encoded.empty()) {
        for (const at::Tensor& m : *masks) {
          auto png = PngBase64(ps, m);
          if (!png.ok()) return png.status();
          encoded.push_back(*std::move(png));
        }
      }
      for (size_t i = 0; i < items.size() && i < encoded.size(); ++i) {
        const json image = items[i].is_object() ? items[i].value("image", json()) : items[i];
        items[i] = {{"image", image}, {"mask", encoded[i]}};
      }
      changed = true;
    }
  }
  int shortest = -1;
  for (const json& u : *units) {
    if (!enabled(u) || empty(u, "batch_images") || !u["batch_images"].is_array()) continue;
    const int n = static_cast<int>(u["batch_images"].size());
    if (shortest < 0 || n < shortest) shortest = n;
  }
  if (shortest < 0) return absl::OkStatus();
  if (a.video_length == 0 || a.video_length > shortest) a.video_length = shortest;
  a.batch_size = std::min(a.batch_size, shortest);
  for (json& u : *units) {
    if (!enabled(u) || empty(u, "batch_images") || !u["batch_images"].is_array()) continue;
    if (static_cast<int>(u["batch_images"].size()) > a.video_length) {
      u["batch_images"].erase(u["batch_images"].begin() + a.video_length, u["batch_images"].end());
      changed = true;
    }
  }
  if (!changed) return absl::OkStatus();
  if (atelier_status s = ps.host->feed_plugin(job, "controlnet", args.dump().c_str(), &e); s != ATELIER_OK) {
    return sdk::FromAbi(s, e);
  }
  return absl::OkStatus();
}

// Motion LoRAs: the job's <lora:...> networks with motion-module keys patch a copy of the module (the last patch
// is kept while the same networks and multipliers come again).
absl::StatusOr<std::shared_ptr<const ad::MotionModuleSet>> WithMotionLoras(
    PluginState& ps, std::shared_ptr<const ad::MotionModuleSet> module, const atelier_job_info* info) {
  if (!ATELIER_HAS_FIELD(info, atelier_job_info, loras_json) || info->loras_json == nullptr) return module;
  const json networks = json::parse(info->loras_json, nullptr, false);
  if (!networks.is_array() || networks.empty()) return module;
  std::map<std::pair<int, std::string>, at::Tensor> deltas;
  std::string key = ps.loaded_file;
  for (const json& n : networks) {
    const std::string file = n.value("filename", "");
    const double unet = n.value("unet", 1.0);
    auto tensors = sdk::ReadTensorFile(ps.host, ATELIER_FOLDER_LORA, file);
    if (!tensors.ok()) return tensors.status();
    if (!ad::HasMotionKeys(*tensors)) continue;
    if (absl::Status s = ad::AddMotionLora(*module, *tensors, unet, file, deltas); !s.ok()) return s;
    key += absl::StrCat("|", file, ":", unet);
  }
  if (deltas.empty()) return module;
  std::lock_guard<std::mutex> lock(ps.mu);
  if (ps.patched && ps.patched_key == key) return ps.patched;
  ps.patched.reset();
  ps.patched = std::shared_ptr<const ad::MotionModuleSet>(module->Patched(deltas));
  ps.patched_key = key;
  return ps.patched;
}

atelier_status Init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    auto s = std::make_unique<PluginState>();
    s->host = host;
    s->device = sdk::HostDevice(host);
    s->dtype = sdk::HostComputeDtype(host);
    if (const char* v = std::getenv("ATELIER_ANIMATEDIFF_MAX_FRAMES"); v != nullptr && std::atoi(v) >= 1) {
      s->max_frames = std::atoi(v);
    }
    *state = reinterpret_cast<atelier_plugin_state*>(s.release());
    return absl::OkStatus();
  });
}

void Finalize(atelier_plugin_state* state) { delete Plugin(state); }

void ModelUnloaded(atelier_plugin_state* state) {
  PluginState& ps = *Plugin(state);
  std::lock_guard<std::mutex> lock(ps.mu);
  ps.loaded.reset();
  ps.loaded_file.clear();
  ps.patched.reset();
  ps.patched_key.clear();
}

atelier_status Process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info, const char* args_json,
                       atelier_job_state** job_state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    auto parsed = sdk::Args::Parse(args_json);
    if (!parsed.ok()) return parsed.status();
    const auto units = parsed->Units(ad::AnimateDiffFieldNames());
    if (units.empty()) return absl::OkStatus();
    auto args = ad::ParseAnimateDiffArgs(units[0]);
    if (!args.ok()) return args.status();
    if (!args->enable) return absl::OkStatus();
    auto loaded = LoadModule(ps, args->model);
    if (!loaded.ok()) return loaded.status();
    auto module = WithMotionLoras(ps, *loaded, info);
    if (!module.ok()) return module.status();
    if (absl::Status s = SetUpControlNet(ps, job, *args); !s.ok()) return s;
    if (absl::Status s = ad::ResolveAnimateDiffArgs(*args, (*module)->max_frames(), ps.max_frames); !s.ok()) return s;
    auto js = std::make_unique<JobState>();
    js->job = job;
    js->args = *args;
    js->module = *module;
    auto travel = ad::ParsePromptTravel(info->prompt != nullptr ? info->prompt : "", args->video_length);
    if (!travel.ok()) return travel.status();
    js->travel = *std::move(travel);
    js->travel_closed = args->video_length > args->batch_size &&
                        (args->closed_loop == ad::ClosedLoop::kRPlusP || args->closed_loop == ad::ClosedLoop::kA);
    if (js->travel && !ATELIER_HAS_FIELD(ps.host, atelier_host_api, text_condition)) {
      return absl::UnimplementedError("AnimateDiff prompt travel needs a daemon with plugin ABI 1.3 (text_condition)");
    }
    js->img2img = info->img2img != 0;
    js->width = info->width;
    js->height = info->height;
    js->resize_mode = ATELIER_HAS_FIELD(info, atelier_job_info, resize_mode) ? info->resize_mode : 0;
    if (js->img2img && !args->last_frame.empty()) {
      auto last = sdk::DecodeBase64Image(ps.host, args->last_frame, "AnimateDiff last_frame");
      if (!last.ok()) return last.status();
      js->last_frame = last->slice(2, 0, 3).contiguous();  // RGB (an alpha channel is dropped)
    }
    atelier_error e{};
    const std::string info_text = ad::AnimateDiffInfotext(*args, "", js->img2img);
    if (atelier_status s = ps.host->add_infotext(job, -1, "AnimateDiff", info_text.c_str(), &e); s != ATELIER_OK) {
      return sdk::FromAbi(s, e);
    }
    // The files of `format` (the export plugin) and RIFE in-between frames (the rife plugin), as the extension
    // makes them after the frames.
    json files = json::array();
    for (const auto& f : args->format) {
      const std::string upper = absl::AsciiStrToUpper(f);
      if (upper != "FRAME") files.push_back(upper);
    }
    if (!files.empty()) {
      const json exp = {{"args", json::array({{{"enabled", true}, {"format", files}, {"fps", args->fps},
                                               {"loop_number", args->loop_number}, {"request_id", args->request_id}}})}};
      if (atelier_status s = ps.host->feed_plugin(job, "export", exp.dump().c_str(), &e); s != ATELIER_OK) {
        return absl::Status(sdk::FromAbi(s, e).code(),
                            absl::StrCat("AnimateDiff format needs the export plugin: ", e.message));
      }
    }
    if (absl::AsciiStrToUpper(args->interp) == "RIFE") {
      const json rife = {{"args", json::array({{{"interp", "RIFE"}, {"interp_x", args->interp_x}}})}};
      if (atelier_status s = ps.host->feed_plugin(job, "rife", rife.dump().c_str(), &e); s != ATELIER_OK) {
        return absl::Status(sdk::FromAbi(s, e).code(), absl::StrCat("AnimateDiff interp RIFE needs the rife plugin: ", e.message));
      }
    }
    *job_state = reinterpret_cast<atelier_job_state*>(js.release());
    return absl::OkStatus();
  });
}

void JobEnd(atelier_plugin_state*, atelier_job_state* job_state) { delete Job(job_state); }

// The batch is the video: video_length frames (seeds seed + i); v1 modules normalise the frames of a video jointly.
atelier_status ShapeJob(atelier_plugin_state*, atelier_job_state* job_state, atelier_job_shape* shape, atelier_error*) {
  JobState& js = *Job(job_state);
  shape->batch_size = js.args.video_length;
  shape->frames_per_video = js.module->group_norm_over_frames() ? js.args.video_length : 0;
  return ATELIER_OK;
}

// While the module is in: alphas_cumprod = cumprod(1 - linspace(0.00085, 0.012, 1000)) (the extension's
// _set_ddim_alpha for SD1.x).
atelier_status Schedule(atelier_plugin_state*, atelier_job_state*, atelier_schedule_params* params, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    const int64_t n = params->alphas_cumprod->shape[0];
    const at::Tensor betas = at::linspace(0.00085, 0.012, n, at::kFloat);
    params->alphas_cumprod_out = sdk::Export(at::cumprod(1 - betas, 0).contiguous());
    return absl::OkStatus();
  });
}

// The job's conditioning of a prompt (ABI 1.3 text_condition).
absl::StatusOr<at::Tensor> Condition(const PluginState& ps, atelier_job* job, const std::string& prompt) {
  DLManagedTensor* out = nullptr;
  atelier_error e{};
  if (atelier_status s = ps.host->text_condition(job, prompt.c_str(), &out, &e); s != ATELIER_OK) {
    return sdk::FromAbi(s, e);
  }
  return sdk::Adopt(out);
}

// Prompt travel: every frame's conditional rows become the keyframes' conditionings, interpolated (computed once, at
// the first denoiser call, as the extension does). Shorter conditionings are padded with the empty prompt's chunks
// to the job's token count (WebUI's pad_cond).
atelier_status CfgDenoiser(atelier_plugin_state* state, atelier_job_state* job_state, atelier_cfg_denoiser_params* params,
                           atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState& js = *Job(job_state);
    if (!js.travel) return absl::OkStatus();
    const at::Tensor cond = sdk::View(params->text_cond);
    const int64_t frames = js.args.video_length, tokens = cond.size(1);
    if (params->cond_rows % frames != 0) {
      return absl::FailedPreconditionError("AnimateDiff prompt travel: the conditional rows are not whole videos");
    }
    if (!js.travel_cond.defined()) {
      std::vector<at::Tensor> keys;
      at::Tensor empty;
      for (const auto& [frame, text] : js.travel->keys) {
        auto c = Condition(ps, js.job, js.travel->KeyPrompt(text));
        if (!c.ok()) return c.status();
        at::Tensor k = *c;
        if (k.size(0) > tokens) {
          return absl::InvalidArgumentError(absl::StrCat("prompt travel: frame ", frame, "'s prompt conditions to ",
                                                         k.size(0), " tokens, more than the whole prompt's ", tokens));
        }
        if (k.size(0) < tokens) {
          if (!empty.defined()) {
            auto e = Condition(ps, js.job, "");
            if (!e.ok()) return e.status();
            empty = *e;
          }
          k = at::cat({k, empty.repeat({(tokens - k.size(0)) / empty.size(0), 1})}, 0);
        }
        keys.push_back(k.to(at::kFloat));
      }
      js.travel_cond = at::stack(ad::TravelConditionings(*js.travel, keys, static_cast<int>(frames), js.travel_closed));
    }
    if (js.travel_cond.size(1) != tokens) {
      return absl::InvalidArgumentError("prompt travel: the conditioning changed its length between steps");
    }
    params->text_cond_out =
        sdk::Export(js.travel_cond.repeat({params->cond_rows / frames, 1, 1}).to(cond.device(), cond.scalar_type()).contiguous());
    return absl::OkStatus();
  });
}

// Context windows: each window's frames (cond rows, then the same frames' uncond rows) in one UNet call through the
// rest of the chain; a frame's eps is the last window's that covers it.
atelier_status ModelCall(atelier_plugin_state* state, atelier_job_state* job_state, atelier_model_call_params* params,
                         atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState& js = *Job(job_state);
    const uint64_t step = js.calls++;
    const atelier_model_call_args& a = *params->args;
    const at::Tensor x = sdk::View(a.x), t = sdk::View(a.timesteps), ctx = sdk::View(a.context);
    const int64_t rows = x.size(0), frames = js.args.video_length, context = js.args.batch_size;
    const int64_t videos = rows / frames;
    if (rows % frames != 0 || a.cond_rows % frames != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "AnimateDiff: a UNet call of ", rows, " rows (", a.cond_rows, " conditional) is not whole videos of ", frames,
          " frames (composable AND prompts and batches of several videos are not supported with AnimateDiff)"));
    }
    at::Tensor eps;
    for (const auto& window : ad::ContextWindows(step, static_cast<int>(frames), static_cast<int>(context),
                                                 js.args.stride, js.args.overlap, js.args.closed_loop)) {
      std::vector<int64_t> picked;
      for (int64_t v = 0; v < videos; ++v) {
        for (int f : window) picked.push_back(v * frames + (f % frames));
      }
      const at::Tensor index = at::tensor(picked, at::TensorOptions().dtype(at::kLong).device(x.device()));
      const at::Tensor wx = x.index_select(0, index).contiguous(), wt = t.index_select(0, index.to(t.device())).contiguous();
      const at::Tensor wc = ctx.index_select(0, index.to(ctx.device())).contiguous();
      sdk::Borrow bx(wx), bt(wt), bc(wc);
      atelier_model_call_args next{};
      next.struct_size = sizeof(next);
      next.x = bx.get();
      next.timesteps = bt.get();
      next.context = bc.get();
      next.cond_rows = static_cast<int32_t>((a.cond_rows / frames) * static_cast<int64_t>(window.size()));
      next.frames_per_video = static_cast<int32_t>(window.size());
      const at::Tensor rows_cpu = index.to(at::kCPU);
      sdk::Borrow brows(rows_cpu);
      next.batch_rows = brows.get();  // a ControlNet unit with one image per frame picks each row's
      js.window_frames = static_cast<int>(window.size());
      DLManagedTensor* out = nullptr;
      atelier_error e{};
      if (atelier_status s = ps.host->model_call_next(params->call, &next, &out, &e); s != ATELIER_OK) {
        return sdk::FromAbi(s, e);
      }
      const at::Tensor w = sdk::Adopt(out);
      if (!eps.defined()) eps = at::zeros({rows, w.size(1), w.size(2), w.size(3)}, w.options());
      eps.index_copy_(0, index.to(eps.device()), w);  // the last window to cover a frame writes it
    }
    params->eps_out = sdk::Export(eps.contiguous());
    return absl::OkStatus();
  });
}

// The motion module at the UNet's block points, over each window's frames.
atelier_status UnetBlock(atelier_plugin_state*, atelier_job_state* job_state, atelier_unet_block_params* params,
                         atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState& js = *Job(job_state);
    if (!js.module->HasPoint(params->point)) return absl::OkStatus();
    const at::Tensor hidden = sdk::View(params->hidden);
    const int frames = js.window_frames > 0 ? js.window_frames : js.args.video_length;
    auto out = js.module->Forward(params->point, hidden, frames);
    if (!out.ok()) return out.status();
    params->hidden_out = sdk::Export(out->to(hidden.scalar_type()).contiguous());
    return absl::OkStatus();
  });
}

// Each pass's sampler counts its denoiser calls from 0 (WebUI makes a new sampler per pass, the hires pass too).
atelier_status PassStarted(atelier_plugin_state*, atelier_job_state* job_state, const atelier_pass_info*,
                           atelier_error*) {
  Job(job_state)->calls = 0;
  return ATELIER_OK;
}

// The next draw of the batch's image RNG (ABI 1.4 next_noise).
absl::StatusOr<at::Tensor> NextNoise(const PluginState& ps, atelier_job* job) {
  DLManagedTensor* out = nullptr;
  atelier_error e{};
  if (atelier_status s = ps.host->next_noise(job, &out, &e); s != ATELIER_OK) return sdk::FromAbi(s, e);
  return sdk::Adopt(out);
}

// The last frame's latent [1, 4, h, w] for a job of the init latent's size: resized as the init image was (latent
// upscale: encoded at its own size, then the latent resized bilinearly, as the extension means it to).
absl::StatusOr<at::Tensor> LastFrameLatent(const PluginState& ps, const JobState& js, int64_t h, int64_t w) {
  const auto mode = static_cast<atelier::engine::ResizeMode>(js.resize_mode);
  auto image = atelier::engine::ResizeInitImage(js.last_frame, mode, js.width, js.height);
  if (!image.ok()) return image.status();
  const at::Tensor pixels = image->permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255).contiguous();
  sdk::Borrow in(pixels);
  DLManagedTensor* out = nullptr;
  atelier_error e{};
  if (atelier_status s = ps.host->vae_encode(js.job, in.get(), &out, &e); s != ATELIER_OK) return sdk::FromAbi(s, e);
  at::Tensor latent = sdk::Adopt(out);
  if (latent.size(2) != h || latent.size(3) != w) {
    latent = at::upsample_bilinear2d(latent, {h, w}, /*align_corners=*/false);
  }
  return latent;
}

// img2img: frame i starts from the init latent weighted by the extension's init_alpha[i] (and the last frame's
// latent from the end), the rest the batch's first noise draw (AnimateDiffI2VLatent.randomize).
atelier_status InitLatent(atelier_plugin_state* state, atelier_job_state* job_state,
                          atelier_init_latent_params* params, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState& js = *Job(job_state);
    if (params->pass == nullptr || params->pass->pass != ATELIER_PASS_IMG2IMG) return absl::OkStatus();
    const at::Tensor init = sdk::View(params->init_latent);
    const int frames = static_cast<int>(init.size(0));
    auto noise = NextNoise(ps, js.job);
    if (!noise.ok()) return noise.status();
    const ad::AnimateDiffArgs& a = js.args;
    const ad::I2vAlphas alphas = ad::I2vLatentAlphas(frames, a.latent_power, a.latent_scale, js.last_frame.defined(),
                                                     a.latent_power_last, a.latent_scale_last);
    at::Tensor last;
    if (js.last_frame.defined()) {
      auto latent = LastFrameLatent(ps, js, init.size(2), init.size(3));
      if (!latent.ok()) return latent.status();
      last = *latent;
    }
    params->init_latent_out = sdk::Export(ad::MixI2vLatent(alphas, init, last, noise->to(init.device())).contiguous());
    return absl::OkStatus();
  });
}

// FreeInit: the pass sampled freeinit_iters times, each later start the previous result diffused to t = 999 with
// its low frequencies kept and the first noise's high ones (the extension's sample_t2i / sample_i2i).
atelier_status Sample(atelier_plugin_state* state, atelier_job_state* job_state, atelier_sample_params* params,
                      atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState& js = *Job(job_state);
    const ad::AnimateDiffArgs& a = js.args;
    if (!a.freeinit_enable || params->pass == nullptr || params->pass->pass == ATELIER_PASS_HIRES) {
      return absl::OkStatus();
    }
    const at::Tensor initial = sdk::View(params->noise).clone();
    const at::Tensor alphas = sdk::View(params->alphas_cumprod);
    auto filter = ad::FreeInitFilter(a.freeinit_filter, static_cast<int>(initial.size(0)),
                                     static_cast<int>(initial.size(2)), static_cast<int>(initial.size(3)),
                                     a.freeinit_ds, a.freeinit_dt);
    if (!filter.ok()) return filter.status();
    at::Tensor x = initial;
    int32_t interrupted = 0;
    for (int iter = 0; iter < a.freeinit_iters && interrupted == 0; ++iter) {
      if (iter > 0) x = ad::FreqMix3d(ad::DiffuseToEnd(x, initial, alphas), initial, *filter);
      atelier_error e{};
      const std::string text = absl::StrCat("FreeInit iteration ", iter + 1, " of ", a.freeinit_iters);
      ps.host->report_progress(js.job, "freeinit", iter, a.freeinit_iters, text.c_str(), &e);
      js.calls = 0;  // every sampler.sample starts its denoiser's step count (the windows' schedule) at 0
      sdk::Borrow in(x);
      DLManagedTensor* out = nullptr;
      if (atelier_status s = ps.host->sample_next(params->call, in.get(), &out, &interrupted, &e); s != ATELIER_OK) {
        return sdk::FromAbi(s, e);
      }
      x = sdk::Adopt(out);
    }
    params->latent_out = sdk::Export(x.contiguous());
    params->interrupted_out = interrupted;
    return absl::OkStatus();
  });
}

constexpr const char* kSchema = R"json({
  "type": "object",
  "description": "sd-webui-animatediff's API: {\"args\": [{\"enable\": true, \"model\": \"mm_sd15_v3.safetensors\", \"video_length\": 16, ...}]}",
  "properties": {"args": {"type": "array", "items": {"$ref": "#/definitions/process"}}},
  "definitions": {
    "process": {
      "type": "object",
      "properties": {
        "model": {"type": "string", "default": "mm_sd15_v3.safetensors", "description": "a file in models/AnimateDiff"},
        "enable": {"type": "boolean", "default": false},
        "video_length": {"type": "integer", "minimum": 0, "default": 0, "description": "frames; 0: batch_size"},
        "fps": {"type": "number", "default": 8},
        "loop_number": {"type": "integer", "minimum": 0, "default": 0},
        "closed_loop": {"enum": ["N", "R-P", "R+P", "A"], "default": "R-P"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 16, "description": "context frames per pass"},
        "stride": {"type": "integer", "minimum": 1, "default": 1},
        "overlap": {"type": "integer", "minimum": -1, "default": -1},
        "format": {"type": "array", "items": {"enum": ["GIF", "MP4", "WEBP", "WEBM", "PNG", "TXT", "Frame"]}, "default": ["GIF", "PNG"]},
        "interp": {"enum": ["Off", "RIFE", "FILM"], "default": "Off"},
        "interp_x": {"type": "integer", "minimum": 2, "default": 10},
        "freeinit_enable": {"type": "boolean", "default": false},
        "freeinit_filter": {"enum": ["butterworth", "gaussian", "box", "ideal"], "default": "butterworth"},
        "freeinit_ds": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.25},
        "freeinit_dt": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.25},
        "freeinit_iters": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
        "latent_power": {"type": "number", "default": 1, "description": "img2img: frame i keeps 1 - i^power/scale of the init latent"},
        "latent_scale": {"type": "number", "default": 32},
        "last_frame": {"type": ["string", "null"], "description": "img2img: base64 image the video ends on"},
        "latent_power_last": {"type": "number", "default": 1},
        "latent_scale_last": {"type": "number", "default": 32},
        "request_id": {"type": "string", "default": ""}
      }
    }
  }
})json";

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                                        uint32_t host_abi_minor) {
  static const atelier_plugin_descriptor descriptor = [] {
    atelier_plugin_descriptor d = sdk::Descriptor("animatediff", "1.0.0", 50);
    d.description = "AnimateDiff motion modules (v1, v2, v3, AnimateLCM) with context windows, as sd-webui-animatediff";
    d.params_schema_json = kSchema;
    d.init = Init;
    d.finalize = Finalize;
    d.model_unloaded = ModelUnloaded;
    d.process = Process;
    d.job_end = JobEnd;
    d.shape_job = ShapeJob;
    d.schedule = Schedule;
    d.model_call = ModelCall;
    d.cfg_denoiser = CfgDenoiser;
    d.unet_block = UnetBlock;
    d.pass_started = PassStarted;
    d.init_latent = InitLatent;
    d.sample = Sample;
    return d;
  }();
  return host_abi_major == ATELIER_PLUGIN_ABI_MAJOR && host_abi_minor >= 4 ? &descriptor : nullptr;
}
