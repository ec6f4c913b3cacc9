// controlnet: sd-webui-controlnet as an Atelier plugin (ABI 1.2, on the C++ SDK). A request's
//   "alwayson_scripts": {"controlnet": {"args": [unit, ...]}}
// is read as the extension's API reads it; each enabled unit's image is preprocessed once per job, fitted to each
// sampling pass's size, encoded by its ControlNet's hint block once per size, and the nets' residuals are summed
// into the UNet at every call inside the unit's guidance window (unet_residuals). Detected maps stream to the client
// as artifacts and come back as extra results. The extension's endpoints (model_list, module_list, control_types,
// version, settings, detect) answer through `invoke`; "infotext" turns pasted "ControlNet N" values back into units.
//
// Settings (environment of the daemon): ATELIER_CONTROLNET_CACHE_SIZE (loaded nets kept, default 2, as the
// extension's control_net_model_cache_size), ATELIER_CONTROLNET_UNIT_COUNT (units per request, default 3, as
// control_net_unit_count).
#include <algorithm>
#include <cstdlib>
#include <list>
#include <map>
#include <tuple>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "atelier/sdk/args.h"
#include "atelier/sdk/descriptor.h"
#include "atelier/sdk/image.h"
#include "atelier/sdk/host.h"
#include "atelier/sdk/status.h"
#include "atelier/sdk/tensor.h"
#include "atelier/sdk/tensor_file.h"
#include "control_model.h"
#include "control_unit.h"
#include "control_weights.h"
#include "engine/pipeline/infotext.h"
#include "hint_image.h"
#include "preprocessors.h"

namespace {

namespace sdk = atelier::sdk;
namespace cn = atelier::controlnet;
using nlohmann::json;

constexpr const char* kName = "controlnet";

// ---------------------------------------------------------------------------------------------------------------
// Plugin state: the host, the device, and the loaded nets (an LRU cache shared by every unit that names a net).

struct ModelEntry {
  std::string title;     // "stem [hash8]", as the extension lists it
  std::string stem;      // file name without folder and extension
  std::string filename;  // below the ControlNet folder
};

struct PluginState {
  const atelier_host_api* host = nullptr;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  size_t cache_size = 2;
  int max_units = 3;
  std::mutex mu;  // the cache (invoke and jobs run on the executor, but be safe with model_unloaded)
  std::list<std::pair<std::string, std::shared_ptr<cn::ControlNetModel>>> cache;  // most recent first
};

PluginState* Plugin(atelier_plugin_state* s) { return reinterpret_cast<PluginState*>(s); }

int EnvInt(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && n >= lo && n <= hi) ? static_cast<int>(n) : fallback;
}

absl::StatusOr<std::vector<ModelEntry>> ListModels(const PluginState& ps) {
  atelier_bytes bytes{};
  atelier_error err{};
  if (atelier_status s = ps.host->model_list(ps.host, ATELIER_FOLDER_CONTROLNET, &bytes, &err); s != ATELIER_OK) {
    return sdk::FromAbi(s, err);
  }
  const json list = json::parse(std::string(reinterpret_cast<const char*>(bytes.data), bytes.size), nullptr, false);
  ps.host->bytes_free(&bytes);
  std::vector<ModelEntry> out;
  if (!list.is_array()) return out;
  for (const auto& e : list) {
    std::string name = e.value("name", "");
    const size_t slash = name.rfind('/');
    ModelEntry m;
    m.stem = slash == std::string::npos ? name : name.substr(slash + 1);
    if (m.stem == "None") continue;
    m.filename = e.value("filename", "");
    m.title = absl::StrCat(m.stem, " [", e.value("short_hash", "NOHASH"), "]");
    out.push_back(std::move(m));
  }
  return out;
}

std::string Titles(const std::vector<ModelEntry>& models) {
  if (models.empty()) return "none (put ControlNet files in models/ControlNet)";
  std::vector<std::string> t;
  for (const auto& m : models) t.push_back(m.title);
  return absl::StrJoin(t, ", ");
}

// The extension's find_closest_lora_model_name: the exact title, a bare stem (case-insensitive), else the shortest
// stem containing the name.
absl::StatusOr<ModelEntry> ResolveModel(const std::vector<ModelEntry>& models, const std::string& name) {
  for (const auto& m : models) {
    if (m.title == name) return m;
  }
  const std::string lower = absl::AsciiStrToLower(name);
  const ModelEntry* found = nullptr;
  for (const auto& m : models) {
    if (absl::AsciiStrToLower(m.stem) == lower) found = &m;  // the last duplicate stem wins, as the extension's dict
  }
  if (found != nullptr) return *found;
  for (const auto& m : models) {
    if (absl::StrContains(absl::AsciiStrToLower(m.stem), lower) && (found == nullptr || m.stem.size() < found->stem.size())) {
      found = &m;
    }
  }
  if (found != nullptr) return *found;
  std::string shown = name.size() > 64 ? name.substr(0, 64) + "..." : name;
  return absl::NotFoundError(
      absl::StrCat("ControlNet model '", shown, "' not found; models: ", Titles(models)));
}

// Reads a ControlNet file through the host (safetensors mapped, pickles read without running code).
absl::StatusOr<std::shared_ptr<cn::ControlNetModel>> LoadNet(PluginState& ps, const ModelEntry& entry) {
  {
    std::lock_guard<std::mutex> lock(ps.mu);
    for (auto it = ps.cache.begin(); it != ps.cache.end(); ++it) {
      if (it->first == entry.filename) {
        ps.cache.splice(ps.cache.begin(), ps.cache, it);
        return it->second;
      }
    }
  }
  auto raw = sdk::ReadTensorFile(ps.host, ATELIER_FOLDER_CONTROLNET, entry.filename);
  if (!raw.ok()) return raw.status();
  auto normalized = cn::NormalizeControlNetKeys(*std::move(raw), entry.filename);
  if (!normalized.ok()) return normalized.status();
  auto net = cn::ControlNetModel::Create(*normalized, entry.filename, ps.device, ps.dtype);
  if (!net.ok()) return net.status();
  std::shared_ptr<cn::ControlNetModel> shared = std::move(*net);
  ps.host->log(ps.host, ATELIER_LOG_INFO,
               absl::StrCat("loaded ", entry.title, " (", shared->parameter_bytes() >> 20, " MiB)").c_str());
  std::lock_guard<std::mutex> lock(ps.mu);
  ps.cache.emplace_front(entry.filename, shared);
  while (ps.cache.size() > ps.cache_size) ps.cache.pop_back();
  return shared;
}

// ---------------------------------------------------------------------------------------------------------------
// Images.

// uint8 [H, W, C] CPU tensor -> cv::Mat (copied).
cv::Mat MatOf(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  const int channels = c.dim() == 3 ? static_cast<int>(c.size(2)) : 1;
  cv::Mat m(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC(channels), c.data_ptr());
  return m.clone();
}

absl::StatusOr<cv::Mat> DecodeImage(const PluginState& ps, const std::string& b64, const std::string& what) {
  auto image = sdk::DecodeBase64Image(ps.host, b64, what);
  if (!image.ok()) return image.status();
  return MatOf(*image);
}

// HWC3: gray -> RGB, RGBA composited over white (the preprocessors' own).
cv::Mat Rgb(const cv::Mat& m) { return cn::Hwc3(m); }

cv::Mat Channel0(const cv::Mat& m) {
  if (m.channels() == 1) return m;
  cv::Mat rgb = Rgb(m), c0;
  cv::extractChannel(rgb, c0, 0);
  return c0;
}

// A float32 [3, H, W] tensor in [0, 1] of a uint8 RGB map.
at::Tensor FrameTensor(const cv::Mat& rgb) {
  cv::Mat c = rgb.isContinuous() ? rgb : rgb.clone();
  return at::from_blob(c.data, {c.rows, c.cols, 3}, at::kByte).permute({2, 0, 1}).to(at::kFloat).div(255.0).contiguous();
}

absl::StatusOr<std::string> EncodePng(const PluginState& ps, const cv::Mat& rgb) {
  cv::Mat c = rgb.isContinuous() ? rgb : rgb.clone();
  at::Tensor t = at::from_blob(c.data, {c.rows, c.cols, 3}, at::kByte);
  sdk::Borrow b(t);
  atelier_bytes out{};
  atelier_error err{};
  if (atelier_status s = ps.host->image_encode(ps.host, b.get(), "png", 100, nullptr, &out, &err); s != ATELIER_OK) {
    return sdk::FromAbi(s, err);
  }
  std::string png(reinterpret_cast<const char*>(out.data), out.size);
  ps.host->bytes_free(&out);
  return png;
}

// ---------------------------------------------------------------------------------------------------------------
// Jobs.

struct UnitState {
  int index = 0;
  cn::ControlUnit unit;
  const cn::ModuleInfo* module = nullptr;
  std::shared_ptr<cn::ControlNetModel> net;  // null for model-free modules
  bool global_average_pooling = false;       // shuffle nets
  cn::PreprocessorParams params;
  cv::Mat detected;                          // the preprocessor's output
  std::map<std::pair<int64_t, int64_t>, at::Tensor> guided;  // encoded hint per latent size
  // batch_images: each image's detected map, and its encoded hint per size (frame i of a clip takes image i).
  std::vector<cv::Mat> batch_detected;
  std::map<std::tuple<int64_t, int64_t, size_t>, at::Tensor> batch_guided;
  std::map<std::pair<int64_t, int64_t>, at::Tensor> latent;  // reference_*: the hint's VAE latent per size
  // img2img "Only masked" with inpaint_crop_input_image: the input waits for the pass's crop region.
  cv::Mat input;
  bool crop_pending = false;
  int init_width = 0, init_height = 0;
};

// reference_only / reference_adain: a pass of the UNet over the noised reference latent writes banks (each
// self-attention's input; each gn block's output statistics), which the job's own pass then reads.
enum class BankMode { kIdle, kWrite, kRead };

struct AttentionEntry {
  at::Tensor hidden;  // [rows, tokens, channels]
  double weight, style;
};

struct AdainEntry {
  at::Tensor mean, var;  // [rows, channels, 1, 1]
  double weight, style;
};

struct JobState {
  atelier_job* job = nullptr;
  std::vector<UnitState> units;
  int pass = ATELIER_PASS_TXT2IMG;
  bool hires = false;
  int width = 0, height = 0;  // the first pass's size
  int batch_size = 1;         // images per batch (an AnimateDiff clip's frames, after shape_job)
  std::vector<cv::Mat> maps;  // detected maps to append as results
  // Reference units; units whose output transforms the UNet's prediction (inpaint_only, tile_colorfix).
  bool has_reference = false;
  bool has_post = false;
  at::Tensor alphas_cumprod;  // the job's schedule (from the schedule hook), CPU float32
  uint64_t noise_calls = 0;   // seeds the reference noise: the job's seed + a counter (reproducible)
  int64_t seed = 0;
  BankMode mode = BankMode::kIdle;
  // What the unit being written contributes.
  double write_weight = 0, write_style = 0;
  bool write_attention = false, write_adain = false;
  std::map<int, std::vector<AttentionEntry>> attention_bank;  // by layer
  std::map<int, int64_t> layer_channels;                      // by layer, from the write pass
  std::map<std::pair<int, int>, std::vector<AdainEntry>> adain_bank;  // by (block kind, index)
};

JobState* Job(atelier_job_state* s) { return reinterpret_cast<JobState*>(s); }

absl::Status AddInfotext(const PluginState& ps, atelier_job* job, const std::string& key, const std::string& value) {
  atelier_error err{};
  return sdk::FromAbi(ps.host->add_infotext(job, -1, key.c_str(), value.c_str(), &err), err);
}

std::string PrintSlider(double v, bool integral) {
  return integral ? std::to_string(static_cast<long long>(v)) : atelier::engine::PythonFloat(v);
}

// The fitted hint of a unit at pixel size h x w, encoded by its net; cached per size.
absl::StatusOr<at::Tensor> GuidedHint(UnitState& u, int64_t h, int64_t w) {
  auto key = std::make_pair(h, w);
  auto it = u.guided.find(key);
  if (it != u.guided.end()) return it->second;
  cv::Mat fitted = cn::FitDetectedMap(u.detected, u.unit.resize_mode, static_cast<int>(h), static_cast<int>(w));
  at::Tensor hint = cn::HintTensor(fitted);
  auto guided = u.net->EncodeHint(hint);
  if (!guided.ok()) return guided.status();
  u.guided.emplace(key, *guided);
  return *guided;
}

// The hint of batch image `i` at pixel size h x w, encoded by the unit's net; cached.
absl::StatusOr<at::Tensor> GuidedHintAt(UnitState& u, int64_t h, int64_t w, size_t i) {
  const auto key = std::make_tuple(h, w, i);
  auto it = u.batch_guided.find(key);
  if (it != u.batch_guided.end()) return it->second;
  cv::Mat fitted = cn::FitDetectedMap(u.batch_detected[i], u.unit.resize_mode, static_cast<int>(h), static_cast<int>(w));
  auto guided = u.net->EncodeHint(cn::HintTensor(fitted));
  if (!guided.ok()) return guided.status();
  u.batch_guided.emplace(key, *guided);
  return *guided;
}

// What the preprocessor gets from an image and its mask (may be empty): inpaint modules the image with the mask as
// a fourth channel; others the image, or a mask that is not blank (the extension's "canvas scribble mode").
absl::StatusOr<cv::Mat> ControlInput(const cn::ModuleInfo& module, const cv::Mat& image, const cv::Mat& mask,
                                     const std::string& prefix) {
  if (!mask.empty() && (mask.rows != image.rows || mask.cols != image.cols)) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "the mask is ", mask.cols, "x", mask.rows,
                                                   " but the image is ", image.cols, "x", image.rows));
  }
  if (module.inpaint) {
    if (mask.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, module.name, " needs a mask (\"mask\", or \"image\": "
                                                                          "{\"image\": ..., \"mask\": ...})"));
    }
    std::vector<cv::Mat> ch;
    cv::split(image, ch);
    ch.push_back(mask);
    cv::Mat input;
    cv::merge(ch, input);
    return input;
  }
  if (!mask.empty()) {
    double lo = 0, hi = 0;
    cv::minMaxLoc(mask, &lo, &hi);
    if (!(hi <= 5 || lo >= 250)) return Rgb(mask);
  }
  return image;
}

absl::Status PrepareUnit(PluginState& ps, const atelier_job_info* info, const std::vector<ModelEntry>* models,
                         UnitState& u, atelier_job* job) {
  const std::string prefix = absl::StrCat("ControlNet unit ", u.index, ": ");
  if (!u.unit.batch_images.empty() && u.unit.image.empty()) {
    u.unit.image = u.unit.batch_images[0];
    if (u.unit.mask.empty() && !u.unit.batch_masks.empty()) u.unit.mask = u.unit.batch_masks[0];
  }
  u.module = cn::FindModule(u.unit.module);
  if (u.module == nullptr) {
    if (cn::IsNetworkModule(u.unit.module)) {
      return absl::UnimplementedError(absl::StrCat(prefix, "preprocessor '", u.unit.module,
                                                   "' needs a neural network this build does not have; preprocessors "
                                                   "that work: ", cn::ModuleNames()));
    }
    std::string shown = u.unit.module.size() > 64 ? u.unit.module.substr(0, 64) + "..." : u.unit.module;
    return absl::NotFoundError(absl::StrCat(prefix, "unknown module '", shown, "'; modules: ", cn::ModuleNames()));
  }
  if (u.module->model_free) {
    // reference_*: no ControlNet model (the extension ignores the unit's model).
  } else if (u.unit.model.empty() || u.unit.model == "None") {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "no ControlNet model selected (\"model\"); models: ", Titles(*models)));
  }
  if (!u.module->model_free) {
    auto entry = ResolveModel(*models, u.unit.model);
    if (!entry.ok()) return absl::Status(entry.status().code(), prefix + std::string(entry.status().message()));
    auto net = LoadNet(ps, *entry);
    if (!net.ok()) return absl::Status(net.status().code(), prefix + std::string(net.status().message()));
    u.net = *net;
    u.global_average_pooling = absl::StrContains(absl::AsciiStrToLower(entry->stem), "shuffle");
  }

  // The input image: the unit's, else (img2img) the job's init image and mask.
  cv::Mat image, mask;
  if (!u.unit.image.empty()) {
    auto decoded = DecodeImage(ps, u.unit.image, prefix + "image");
    if (!decoded.ok()) return decoded.status();
    image = Rgb(*decoded);
    if (!u.unit.mask.empty()) {
      auto m = DecodeImage(ps, u.unit.mask, prefix + "mask");
      if (!m.ok()) return m.status();
      mask = Channel0(*m);  // its size is checked with the image (ControlInput)
    }
  } else if (info->init_image != nullptr) {
    image = Rgb(MatOf(sdk::View(info->init_image)));
    if (u.module->name == "inpaint_only" && info->mask != nullptr) {
      // "A1111 inpaint and ControlNet inpaint duplicated": the extension runs inpaint (global harmonious) then.
      ps.host->log(ps.host, ATELIER_LOG_WARNING, "inpaint_only with img2img inpainting: using inpaint");
      u.module = cn::FindModule("inpaint");
    }
    if (u.module->inpaint && info->mask != nullptr) {
      mask = MatOf(sdk::View(info->mask));
      if (mask.rows != image.rows || mask.cols != image.cols) cv::resize(mask, mask, image.size(), 0, 0, cv::INTER_NEAREST);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "ControlNet is enabled but no input image is given "
                                                           "(\"image\": base64 PNG/JPEG/WebP)"));
  }
  auto composed = ControlInput(*u.module, image, mask, prefix);
  if (!composed.ok()) return composed.status();
  cv::Mat input = *composed;

  u.params = cn::BoundParams(*u.module, u.unit.processor_res, u.unit.threshold_a, u.unit.threshold_b);
  // Infotext first (the extension writes it before pixel perfect changes the resolution).
  cn::InfotextValues iv;
  iv.module = u.unit.module;
  iv.model = u.unit.model;
  iv.weight = u.unit.weight;
  iv.resize_mode = u.unit.resize_mode;
  iv.processor_res = PrintSlider(u.params.resolution, u.params.resolution_integral);
  iv.threshold_a = PrintSlider(u.params.a, u.params.a_integral);
  iv.threshold_b = PrintSlider(u.params.b, u.params.b_integral);
  iv.guidance_start = u.unit.guidance_start;
  iv.guidance_end = u.unit.guidance_end;
  iv.pixel_perfect = u.unit.pixel_perfect;
  iv.control_mode = u.unit.control_mode;
  if (auto s = AddInfotext(ps, job, absl::StrCat("ControlNet ", u.index), cn::UnitInfotext(iv)); !s.ok()) return s;

  const int h = info->height / 8 * 8, w = info->width / 8 * 8;
  if (u.unit.pixel_perfect) {
    u.params.resolution = cn::PixelPerfectResolution(input.rows, input.cols, h, w, u.unit.resize_mode);
  }
  // The numpy seed the extension sets before preprocessing (shuffle).
  u.params.seed = static_cast<std::uint32_t>((static_cast<std::uint64_t>(std::max<int64_t>(info->seed, 0)) +
                                              static_cast<std::uint64_t>(std::max<int64_t>(info->subseed, 0))) &
                                             0xffffffffULL);
  if (info->init_image != nullptr && info->mask != nullptr && info->inpaint_full_res != 0 &&
      u.unit.inpaint_crop_input_image && !u.module->model_free) {
    // "Only masked": the extension crops the control image to the region the pass samples (pass_started).
    u.input = input;
    u.crop_pending = true;
    u.init_width = static_cast<int>(info->init_image->shape[1]);
    u.init_height = static_cast<int>(info->init_image->shape[0]);
    return absl::OkStatus();
  }
  auto detected = cn::RunPreprocessor(*u.module, input, u.params);
  if (!detected.ok()) return absl::Status(detected.status().code(), prefix + std::string(detected.status().message()));
  u.detected = *detected;
  if (!u.unit.batch_images.empty()) {
    // inpaint_only's prediction and pixel blends and the reference modules keep one image for the whole batch.
    if (u.module->model_free || (u.module->inpaint && u.module->name != "inpaint")) {
      return absl::UnimplementedError(absl::StrCat(prefix, "batch_images with ", u.module->name,
                                                   ": per-image hints work with inpaint (global harmonious, per-image "
                                                   "masks) and the other preprocessors"));
    }
    for (size_t i = 0; i < u.unit.batch_images.size(); ++i) {
      const std::string item = absl::StrCat(prefix, "batch_images[", i, "]");
      auto decoded = DecodeImage(ps, u.unit.batch_images[i], item);
      if (!decoded.ok()) return decoded.status();
      cv::Mat item_mask = mask;  // the unit's mask, unless the item has its own
      if (i < u.unit.batch_masks.size() && !u.unit.batch_masks[i].empty()) {
        auto m = DecodeImage(ps, u.unit.batch_masks[i], item + " mask");
        if (!m.ok()) return m.status();
        item_mask = Channel0(*m);
      }
      auto item_input = ControlInput(*u.module, Rgb(*decoded), item_mask, item + ": ");
      if (!item_input.ok()) return item_input.status();
      auto d = cn::RunPreprocessor(*u.module, *item_input, u.params);
      if (!d.ok()) return absl::Status(d.status().code(), prefix + std::string(d.status().message()));
      u.batch_detected.push_back(*d);
    }
  }
  return absl::OkStatus();
}

// Streams a unit's detected map (fitted to h x w) as an artifact and keeps it for the results.
absl::Status EmitMap(const PluginState& ps, JobState& js, const UnitState& u, int h, int w) {
  cv::Mat fitted = cn::DisplayMap(cn::FitDetectedMap(u.detected, u.unit.resize_mode, h, w));
  auto png = EncodePng(ps, fitted);
  if (!png.ok()) return png.status();
  atelier_error e{};
  const std::string name = absl::StrCat("controlnet-", u.index, "-", u.module->name, ".png");
  if (atelier_status s = ps.host->emit_artifact(js.job, name.c_str(), "image/png", png->data(), png->size(), &e);
      s != ATELIER_OK) {
    return sdk::FromAbi(s, e);
  }
  if (u.unit.save_detected_map) js.maps.push_back(fitted);
  return absl::OkStatus();
}

// try_crop_image_with_a1111_mask: the input fitted to the init image (the unit's resize mode), cut to the region,
// fitted to the pass's size with Resize and Fill, then preprocessed.
absl::Status CropAndPreprocess(const PluginState& ps, JobState& js, UnitState& u, const atelier_pass_info& pass) {
  cv::Mat input = u.input;
  if (pass.crop_width > 0 && pass.crop_height > 0) {
    cv::Mat whole = cn::FitDetectedMap(input, u.unit.resize_mode, u.init_height, u.init_width);
    if (whole.depth() != CV_8U) whole.convertTo(whole, CV_8U);
    const cv::Rect region = cv::Rect(pass.crop_x, pass.crop_y, pass.crop_width, pass.crop_height) &
                            cv::Rect(0, 0, whole.cols, whole.rows);
    if (region.area() > 0) {
      input = cn::FitDetectedMap(whole(region).clone(), cn::ResizeMode::kResizeAndFill, pass.height, pass.width);
      if (input.depth() != CV_8U) input.convertTo(input, CV_8U);
    }
  }
  auto detected = cn::RunPreprocessor(*u.module, input, u.params);
  if (!detected.ok()) {
    return absl::Status(detected.status().code(),
                        absl::StrCat("ControlNet unit ", u.index, ": ", detected.status().message()));
  }
  u.detected = *detected;
  u.crop_pending = false;
  u.input.release();
  return EmitMap(ps, js, u, pass.height / 8 * 8, pass.width / 8 * 8);
}

atelier_status Init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    if (!ATELIER_HAS_FIELD(host, atelier_host_api, model_list)) {
      return absl::FailedPreconditionError("needs a host with plugin ABI 1.2 (model_list)");
    }
    auto s = std::make_unique<PluginState>();
    s->host = host;
    s->device = sdk::HostDevice(host);
    s->dtype = sdk::HostComputeDtype(host);
    s->cache_size = static_cast<size_t>(EnvInt("ATELIER_CONTROLNET_CACHE_SIZE", 2, 1, 64));
    s->max_units = EnvInt("ATELIER_CONTROLNET_UNIT_COUNT", 3, 1, 64);
    *state = reinterpret_cast<atelier_plugin_state*>(s.release());
    return absl::OkStatus();
  });
}

void Finalize(atelier_plugin_state* state) { delete Plugin(state); }

// A new checkpoint: the nets stay valid (they do not depend on it) but are freed, as the extension's cache is.
void ModelUnloaded(atelier_plugin_state* state) {
  PluginState* ps = Plugin(state);
  std::lock_guard<std::mutex> lock(ps->mu);
  ps->cache.clear();
}

atelier_status Process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                       const char* args_json, atelier_job_state** job_state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    auto args = sdk::Args::Parse(args_json);
    if (!args.ok()) return args.status();
    const auto raw_units = args->Units(cn::PositionalFields());
    auto js = std::make_unique<JobState>();
    js->job = job;
    int index = 0;
    for (size_t i = 0; i < raw_units.size(); ++i) {
      auto unit = cn::ParseUnit(raw_units[i], static_cast<int>(i));
      if (!unit.ok()) return unit.status();
      if (!unit->enabled) continue;
      UnitState u;
      u.index = index++;  // "ControlNet N" counts enabled units
      u.unit = *unit;
      js->units.push_back(std::move(u));
    }
    if (js->units.empty()) return absl::OkStatus();
    if (static_cast<int>(js->units.size()) > ps.max_units) {
      return absl::InvalidArgumentError(absl::StrCat(js->units.size(), " ControlNet units are enabled; at most ",
                                                     ps.max_units, " (ATELIER_CONTROLNET_UNIT_COUNT)"));
    }
    auto models = ListModels(ps);
    if (!models.ok()) return models.status();
    js->hires = info->hires != 0;
    js->width = info->width;
    js->height = info->height;
    js->batch_size = info->batch_size;
    js->seed = info->seed;
    for (auto& u : js->units) {
      if (auto s = PrepareUnit(ps, info, &*models, u, job); !s.ok()) return s;
      // Stream the detected map now; keep it (fitted to the job's size) for the results.
      if (!u.crop_pending) {
        if (auto s = EmitMap(ps, *js, u, info->height / 8 * 8, info->width / 8 * 8); !s.ok()) return s;
      }
      js->has_reference |= u.module->model_free;
      js->has_post |= u.module->name == "inpaint_only" || absl::StrContains(u.module->name, "colorfix");
    }
    *job_state = reinterpret_cast<atelier_job_state*>(js.release());
    return absl::OkStatus();
  });
}

void JobEnd(atelier_plugin_state*, atelier_job_state* job_state) { delete Job(job_state); }

atelier_status PassStarted(atelier_plugin_state* state, atelier_job_state* job_state, const atelier_pass_info* info,
                           atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState* js = Job(job_state);
    js->pass = info->pass;
    for (auto& u : js->units) {
      if (!u.crop_pending) continue;
      if (auto s = CropAndPreprocess(*Plugin(state), *js, u, *info); !s.ok()) return s;
    }
    // Encode each unit's hint for this pass's size now, once (not per step).
    for (auto& u : js->units) {
      if (u.net == nullptr) continue;
      auto g = GuidedHint(u, info->height / 8 * 8, info->width / 8 * 8);
      if (!g.ok()) return g.status();
    }
    return absl::OkStatus();
  });
}

// The final batch (AnimateDiff makes it the clip's frames) for units with one image per item.
atelier_status ShapeJob(atelier_plugin_state*, atelier_job_state* job_state, atelier_job_shape* shape, atelier_error*) {
  Job(job_state)->batch_size = std::max(1, shape->batch_size);
  return ATELIER_OK;
}

atelier_status UnetResiduals(atelier_plugin_state*, atelier_job_state* job_state,
                             atelier_unet_residuals_params* params, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState* js = Job(job_state);
    if (js->mode == BankMode::kWrite) return absl::OkStatus();  // the reference pass runs without control
    const bool hires_pass = params->pass == ATELIER_PASS_HIRES;  // the host says which pass the call is in
    const at::Tensor x = sdk::View(params->x);
    const at::Tensor t = sdk::View(params->timesteps);
    const at::Tensor ctx = sdk::View(params->context);
    const int64_t rows = x.size(0), cond_rows = params->cond_rows;
    cn::Residuals sum;
    for (auto& u : js->units) {
      if (u.net == nullptr) continue;
      if ((u.unit.hr_option == cn::HrOption::kLowResOnly && hires_pass) ||
          (u.unit.hr_option == cn::HrOption::kHighResOnly && js->hires && !hires_pass)) {
        continue;
      }
      if (!cn::GuidanceActive(params->sampling_step, params->total_sampling_steps, u.unit.guidance_start,
                              u.unit.guidance_end)) {
        continue;
      }
      const bool soft = u.unit.control_mode != cn::ControlMode::kBalanced ||
                        (hires_pass && (absl::StrContains(u.unit.module, "canny") ||
                                        absl::StrContains(u.unit.module, "mlsd")));
      const bool cond_only = u.unit.control_mode == cn::ControlMode::kControlMoreImportant || u.global_average_pooling;
      auto guided = GuidedHint(u, x.size(2) * 8, x.size(3) * 8);
      if (!guided.ok()) return guided.status();
      // Conditional-only units run the net on those rows alone: the others get nothing anyway.
      const int64_t n = cond_only ? cond_rows : rows;
      if (n == 0) continue;
      if (!u.batch_detected.empty()) {
        // One image per batch item: each row takes its item's hint (the denoiser's row, when a wrapper such as
        // AnimateDiff's context windows passed a subset; cond and uncond rows of an item share it).
        at::Tensor map;
        if (ATELIER_HAS_FIELD(params, atelier_unet_residuals_params, batch_rows) && params->batch_rows != nullptr) {
          map = sdk::View(params->batch_rows).to(at::kCPU, at::kLong);
        }
        std::vector<at::Tensor> per_row;
        for (int64_t r = 0; r < n; ++r) {
          const int64_t b = map.defined() && r < map.size(0) ? map[r].item<int64_t>() : r;
          const size_t image = static_cast<size_t>((b % std::max(1, js->batch_size)) %
                                                   static_cast<int64_t>(u.batch_detected.size()));
          auto hint = GuidedHintAt(u, x.size(2) * 8, x.size(3) * 8, image);
          if (!hint.ok()) return hint.status();
          per_row.push_back(*hint);
        }
        guided = at::cat(per_row, 0);
      }
      auto raw = u.net->Forward(x.narrow(0, 0, n), t.narrow(0, 0, n), ctx.narrow(0, 0, n), *guided);
      if (!raw.ok()) return raw.status();
      if (u.global_average_pooling) {
        for (auto& r : *raw) r = r.mean({2, 3}, true);
      }
      cn::AccumulateResiduals(sum, *raw, cn::ControlScales(u.unit.weight, soft, u.unit.advanced_weighting), cond_only,
                              cond_rows, rows);
    }
    for (int i = 0; i < cn::kResiduals; ++i) {
      if (!sum[i].defined()) continue;
      params->residual_out[i] = sdk::Export(sum[i].contiguous());
    }
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// reference_only / reference_adain / reference_adain+attn (scripts/hook.py: AttentionInjection).

bool UnitActive(const JobState& js, const UnitState& u, int sampling_step, int total_sampling_steps) {
  const bool hires_pass = js.pass == ATELIER_PASS_HIRES;
  if ((u.unit.hr_option == cn::HrOption::kLowResOnly && hires_pass) ||
      (u.unit.hr_option == cn::HrOption::kHighResOnly && js.hires && !hires_pass)) {
    return false;
  }
  return cn::GuidanceActive(sampling_step, total_sampling_steps, u.unit.guidance_start, u.unit.guidance_end);
}

// The reference image's latent at latent size h x w (the fitted map through the job's VAE), once per size.
absl::StatusOr<at::Tensor> ReferenceLatent(const PluginState& ps, JobState& js, UnitState& u, int64_t h, int64_t w) {
  auto key = std::make_pair(h, w);
  auto it = u.latent.find(key);
  if (it != u.latent.end()) return it->second;
  cv::Mat fitted = cn::FitDetectedMap(u.detected, u.unit.resize_mode, static_cast<int>(h * 8), static_cast<int>(w * 8));
  // The map's RGB in [0, 1] (an inpaint map's unmasked original image, not the -1-masked hint).
  at::Tensor image = cn::HintTensor(cn::DisplayRgb(fitted));
  sdk::Borrow b(image);
  DLManagedTensor* latent = nullptr;
  atelier_error err{};
  if (atelier_status s = ps.host->vae_encode(js.job, b.get(), &latent, &err); s != ATELIER_OK) {
    return sdk::FromAbi(s, err);
  }
  at::Tensor l = sdk::Adopt(latent);
  u.latent.emplace(key, l);
  return l;
}

atelier_status Schedule(atelier_plugin_state*, atelier_job_state* job_state, atelier_schedule_params* params,
                        atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    Job(job_state)->alphas_cumprod = sdk::View(params->alphas_cumprod).to(at::kDouble).clone();
    return absl::OkStatus();  // read only
  });
}

// avg_pool2d over a replicate-padded (2k+1)^2 window: the extension's latent-space box blur.
at::Tensor BoxBlur(const at::Tensor& x, int64_t k) {
  if (k <= 0) return x;
  return at::avg_pool2d(at::replication_pad2d(x, {k, k, k, k}), {2 * k + 1, 2 * k + 1}, {1, 1});
}

// The prediction transforms of hook.py that follow the UNet (not gated by the guidance window): inpaint_only keeps
// the original latent outside the mask; tile_colorfix replaces the prediction's low frequencies with the
// reference's. `eps` [rows, 4, h, w] float32 is transformed in place.
absl::Status PostSteps(const PluginState& ps, JobState& js, const at::Tensor& x, const at::Tensor& timesteps,
                       int64_t cond_rows, at::Tensor& eps) {
  const int64_t rows = x.size(0), h = x.size(2), w = x.size(3);
  const at::Tensor steps = timesteps.round().to(at::kLong).clamp(0, js.alphas_cumprod.size(0) - 1).cpu();
  const at::Tensor ac = js.alphas_cumprod.index_select(0, steps).view({-1, 1, 1, 1});
  const at::Tensor recip = (1.0 / ac).sqrt().to(at::kFloat).to(eps.device());
  const at::Tensor recipm1 = (1.0 / ac - 1.0).sqrt().to(at::kFloat).to(eps.device());
  const at::Tensor xt = x.narrow(1, 0, 4).to(at::kFloat);
  for (auto& u : js.units) {
    const bool inpaint = u.module->name == "inpaint_only" && u.detected.channels() == 4;
    const bool colorfix = absl::StrContains(u.module->name, "colorfix");
    if (!inpaint && !colorfix) continue;
    auto origin = ReferenceLatent(ps, js, u, h, w);
    if (!origin.ok()) return origin.status();
    const at::Tensor x0_origin = origin->to(eps.device(), at::kFloat).expand({rows, -1, -1, -1});
    const at::Tensor x0_prd = recip * xt - recipm1 * eps;
    at::Tensor x0;
    if (inpaint) {
      cv::Mat fitted = cn::FitDetectedMap(u.detected, u.unit.resize_mode, static_cast<int>(h * 8), static_cast<int>(w * 8));
      std::vector<cv::Mat> ch;
      cv::split(fitted, ch);
      cv::Mat alpha;
      ch[3].convertTo(alpha, CV_32F, 1.0 / 255.0);
      at::Tensor m = at::from_blob(alpha.data, {1, 1, alpha.rows, alpha.cols}, at::kFloat).clone();
      m = at::max_pool2d(m, {10, 10}, {8, 8}, {1, 1}).to(eps.device());
      if (m.size(2) != h || m.size(3) != w) m = at::upsample_nearest2d(m, {h, w});
      x0 = x0_prd * m + x0_origin * (1 - m);
    } else {
      int64_t k = static_cast<int64_t>(u.params.a);
      const bool disabled = (u.unit.hr_option == cn::HrOption::kLowResOnly && js.pass == ATELIER_PASS_HIRES) ||
                            (u.unit.hr_option == cn::HrOption::kHighResOnly && js.hires && js.pass != ATELIER_PASS_HIRES);
      if (js.pass == ATELIER_PASS_HIRES && !disabled) k *= 2;
      x0 = x0_prd - BoxBlur(x0_prd, k) + BoxBlur(x0_origin, k);
      if (absl::StrContains(u.module->name, "+sharp")) {
        const double detail = u.params.b * 0.01;  // the extension's scale of its Sharpness slider
        const at::Tensor neg = detail * BoxBlur(x0, k) + (1 - detail) * x0;
        at::Tensor mark = at::zeros({rows, 1, 1, 1}, eps.options());
        mark.narrow(0, 0, std::min(cond_rows, rows)).fill_(1.0);
        x0 = mark * x0 + (1 - mark) * neg;
      }
    }
    const at::Tensor eps_prd = (recip * xt - x0) / recipm1;
    const double wt = std::clamp(u.unit.weight, 0.0, 1.0);
    eps = eps_prd * wt + eps * (1 - wt);
  }
  return absl::OkStatus();
}

atelier_status ModelCall(atelier_plugin_state* state, atelier_job_state* job_state, atelier_model_call_params* params,
                         atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState* js = Job(job_state);
    if ((!js->has_reference && !js->has_post) || js->mode != BankMode::kIdle) return absl::OkStatus();
    const atelier_model_call_args* args = params->args;
    const at::Tensor x = sdk::View(args->x);
    const at::Tensor t = sdk::View(args->timesteps);
    std::vector<UnitState*> active;
    for (auto& u : js->units) {
      if (u.module->model_free && u.unit.weight > 0 &&
          UnitActive(*js, u, params->sampling_step, params->total_sampling_steps)) {
        active.push_back(&u);
      }
    }
    if (!js->alphas_cumprod.defined()) return absl::InternalError("controlnet: the job's noise schedule is unknown");
    if (active.empty()) {
      if (!js->has_post) return absl::OkStatus();  // the call runs unchanged
      DLManagedTensor* eps = nullptr;
      atelier_error e{};
      if (atelier_status s = ps.host->model_call_next(params->call, args, &eps, &e); s != ATELIER_OK) {
        sdk::Adopt(eps);
        return sdk::FromAbi(s, e);
      }
      at::Tensor out = sdk::Adopt(eps);
      if (auto st = PostSteps(ps, *js, x, t, args->cond_rows, out); !st.ok()) return st;
      params->eps_out = sdk::Export(out);
      return absl::OkStatus();
    }
    js->attention_bank.clear();
    js->adain_bank.clear();
    const int64_t rows = x.size(0);
    const at::Tensor steps = t.round().to(at::kLong).clamp(0, js->alphas_cumprod.size(0) - 1).cpu();
    const at::Tensor ac = js->alphas_cumprod.index_select(0, steps).to(at::kFloat).view({-1, 1, 1, 1});
    for (UnitState* u : active) {
      auto latent = ReferenceLatent(ps, *js, *u, x.size(2), x.size(3));
      if (!latent.ok()) return latent.status();
      const at::Tensor x0 = latent->to(at::kFloat).cpu().expand({rows, -1, -1, -1});
      at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(js->seed) + 7919 * ++js->noise_calls);
      const at::Tensor noise = at::randn(x0.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
      at::Tensor ref_xt = ac.sqrt() * x0 + (1 - ac).sqrt() * noise;
      if (x.size(1) == 9) ref_xt = at::cat({ref_xt, at::zeros({rows, 1, x.size(2), x.size(3)}), x0}, 1);
      ref_xt = ref_xt.to(x.device()).contiguous();
      double style = std::clamp(u->params.a, 0.0, 1.0);
      if (u->unit.control_mode == cn::ControlMode::kControlMoreImportant) {
        style = 1.0;
      } else if (u->unit.control_mode == cn::ControlMode::kPromptMoreImportant || js->pass == ATELIER_PASS_HIRES) {
        style = 0.0;
      }
      js->write_weight = u->unit.weight;
      js->write_style = style;
      js->write_attention = u->module->name == "reference_only" || u->module->name == "reference_adain+attn";
      js->write_adain = u->module->name == "reference_adain" || u->module->name == "reference_adain+attn";
      js->mode = BankMode::kWrite;
      sdk::Borrow bx(ref_xt);
      atelier_model_call_args ref = *args;
      ref.x = bx.get();
      DLManagedTensor* discard = nullptr;
      atelier_error e{};
      const atelier_status s = ps.host->model_call_next(params->call, &ref, &discard, &e);
      sdk::Adopt(discard);
      js->mode = BankMode::kIdle;
      if (s != ATELIER_OK) return sdk::FromAbi(s, e);
    }
    js->mode = BankMode::kRead;
    DLManagedTensor* eps = nullptr;
    atelier_error e{};
    const atelier_status s = ps.host->model_call_next(params->call, args, &eps, &e);
    js->mode = BankMode::kIdle;
    js->attention_bank.clear();
    js->adain_bank.clear();
    if (s != ATELIER_OK) {
      sdk::Adopt(eps);
      return sdk::FromAbi(s, e);
    }
    if (!js->has_post) {
      params->eps_out = eps;
      return absl::OkStatus();
    }
    at::Tensor out = sdk::Adopt(eps);
    if (auto st = PostSteps(ps, *js, x, t, args->cond_rows, out); !st.ok()) return st;
    params->eps_out = sdk::Export(out);
    return absl::OkStatus();
  });
}

// The extension's attn_weight of each layer: layers stably sorted by channels, widest first; weight = rank / count.
double AttentionWeight(const JobState& js, int layer) {
  std::vector<std::pair<int, int64_t>> order(js.layer_channels.begin(), js.layer_channels.end());
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i].first == layer) return static_cast<double>(i) / static_cast<double>(order.size());
  }
  return 1.0;
}

atelier_status SelfAttention(atelier_plugin_state*, atelier_job_state* job_state,
                             atelier_self_attention_params* params, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState* js = Job(job_state);
    if (js->mode == BankMode::kWrite) {
      const at::Tensor h = sdk::View(params->hidden);
      js->layer_channels[params->layer] = h.size(2);
      if (js->write_attention) {
        js->attention_bank[params->layer].push_back({h.clone(), js->write_weight, js->write_style});
      }
      return absl::OkStatus();
    }
    if (js->mode != BankMode::kRead) return absl::OkStatus();
    auto it = js->attention_bank.find(params->layer);
    if (it == js->attention_bank.end()) return absl::OkStatus();
    const double attn_weight = AttentionWeight(*js, params->layer);
    std::vector<at::Tensor> bank;
    double style_sum = 0;
    for (const auto& entry : it->second) {
      if (entry.weight > attn_weight) {  // the extension writes only when weight > attn_weight
        bank.push_back(entry.hidden);
        style_sum += entry.style;
      }
    }
    if (bank.empty()) return absl::OkStatus();
    const double style = style_sum / static_cast<double>(bank.size());
    const at::Tensor h = sdk::View(params->hidden);
    params->context_out = sdk::Export(bank.size() == 1 ? bank[0] : at::cat(bank, 1));
    if (style > 1e-5 && params->cond_rows < h.size(0)) {
      at::Tensor w = at::zeros({h.size(0)}, at::kFloat);
      w.narrow(0, params->cond_rows, h.size(0) - params->cond_rows).fill_(style);
      params->plain_weight_out = sdk::Export(w);
    }
    return absl::OkStatus();
  });
}

// The extension's gn_weight of a block (SD1.x): middle 0; input blocks 4, 5, 7, 8, 10, 11: (1 - w/6) * 2; output
// blocks 0..7: (w/8) * 2; others have none (-1).
double AdainWeight(int kind, int index) {
  if (kind == ATELIER_UNET_MIDDLE_BLOCK) return 0.0;
  if (kind == ATELIER_UNET_INPUT_BLOCK) {
    static const int kInputs[] = {4, 5, 7, 8, 10, 11};
    for (int w = 0; w < 6; ++w) {
      if (kInputs[w] == index) return (1.0 - w / 6.0) * 2.0;
    }
    return -1;
  }
  return index >= 0 && index < 8 ? (index / 8.0) * 2.0 : -1;
}

atelier_status UnetBlockEnd(atelier_plugin_state*, atelier_job_state* job_state,
                            atelier_unet_block_end_params* params, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState* js = Job(job_state);
    const double gn_weight = AdainWeight(params->block_kind, params->block_index);
    if (gn_weight < 0 || js->mode == BankMode::kIdle) return absl::OkStatus();
    const auto key = std::make_pair(params->block_kind, params->block_index);
    const at::Tensor x = sdk::View(params->hidden);
    if (js->mode == BankMode::kWrite) {
      if (js->write_adain && js->write_weight > gn_weight) {
        const at::Tensor xf = x.to(at::kFloat);
        auto [var, mean] = at::var_mean(xf, {2, 3}, /*unbiased=*/false, /*keepdim=*/true);
        js->adain_bank[key].push_back({mean, var, js->write_weight, js->write_style});
      }
      return absl::OkStatus();
    }
    auto it = js->adain_bank.find(key);
    if (it == js->adain_bank.end() || it->second.empty()) return absl::OkStatus();
    constexpr double kEps = 1e-6;
    at::Tensor mean_acc, var_acc;
    double style = 0;
    for (const auto& e : it->second) {
      mean_acc = mean_acc.defined() ? mean_acc + e.mean : e.mean;
      var_acc = var_acc.defined() ? var_acc + e.var : e.var;
      style += e.style;
    }
    const double n = static_cast<double>(it->second.size());
    mean_acc = mean_acc / n;
    var_acc = var_acc / n;
    style /= n;
    const at::Tensor xf = x.to(at::kFloat);
    auto [var, mean] = at::var_mean(xf, {2, 3}, /*unbiased=*/false, /*keepdim=*/true);
    const at::Tensor std = at::clamp_min(var, kEps).sqrt();
    const at::Tensor std_acc = at::clamp_min(var_acc, kEps).sqrt();
    const at::Tensor y_uc = (xf - mean) / std * std_acc + mean_acc;
    at::Tensor y = y_uc;
    const int64_t rows = x.size(0);
    if (style > 1e-5 && params->cond_rows < rows) {
      at::Tensor y_c = y_uc.clone();
      y_c.narrow(0, params->cond_rows, rows - params->cond_rows)
          .copy_(xf.narrow(0, params->cond_rows, rows - params->cond_rows));
      y = style * y_c + (1.0 - style) * y_uc;
    }
    params->hidden_out = sdk::Export(y.to(x.scalar_type()).contiguous());
    return absl::OkStatus();
  });
}

// inpaint_only's pixel blend after decoding: the decoded image inside the (dilated, blurred) mask, the original
// outside (the extension's inpaint_only_post_processing, blur sigma 7).
atelier_status Frame(atelier_plugin_state*, atelier_job_state* job_state, atelier_frame_params* params,
                     atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    JobState* js = Job(job_state);
    const at::Tensor image = sdk::View(params->frame->image);
    at::Tensor out;
    for (auto& u : js->units) {
      if (u.module->name != "inpaint_only" || u.detected.channels() != 4) continue;
      const int hh = static_cast<int>(image.size(1)), ww = static_cast<int>(image.size(2));
      cv::Mat fitted = cn::FitDetectedMap(u.detected, u.unit.resize_mode, hh, ww);
      std::vector<cv::Mat> ch;
      cv::split(fitted, ch);
      cv::Mat m;
      ch[3].convertTo(m, CV_32F, 1.0 / 255.0);
      constexpr int kSigma = 7;
      cv::dilate(m, m, cv::Mat::ones(kSigma, kSigma, CV_8U));
      cv::blur(m, m, cv::Size(kSigma, kSigma));
      cv::Mat rgb;
      cv::merge(std::vector<cv::Mat>{ch[0], ch[1], ch[2]}, rgb);
      rgb.convertTo(rgb, CV_32F, 1.0 / 255.0);
      const at::Tensor mask = at::from_blob(m.data, {1, hh, ww}, at::kFloat).clone();
      const at::Tensor raw = at::from_blob(rgb.data, {hh, ww, 3}, at::kFloat).permute({2, 0, 1}).clone();
      const at::Tensor x = out.defined() ? out : image.to(at::kFloat);
      out = (mask * x.clamp(0, 1) + (1 - mask) * raw).clamp(0, 1);
    }
    if (out.defined()) params->image_out = sdk::Export(out.contiguous());
    return absl::OkStatus();
  });
}

// After the last image: the detected maps follow as results (as the extension appends them).
atelier_status FramesFinish(atelier_plugin_state* state, atelier_job_state* job_state,
                            const atelier_frames_finish_params*, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    JobState* js = Job(job_state);
    for (size_t i = 0; i < js->maps.size(); ++i) {
      at::Tensor image = FrameTensor(js->maps[i]);
      sdk::Borrow b(image);
      atelier_frame frame{};
      frame.struct_size = sizeof(frame);
      frame.index = static_cast<int32_t>(i);
      frame.image = b.get();
      atelier_error e{};
      if (atelier_status s = ps.host->push_frame(js->job, &frame, &e); s != ATELIER_OK) return sdk::FromAbi(s, e);
    }
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Invoke: the extension's endpoints.

json SliderJson(const cn::Slider& s) {
  auto num = [](double v, bool integral) { return integral ? json(static_cast<long long>(v)) : json(v); };
  const bool whole = s.integral;
  return {{"name", s.name}, {"value", num(s.value, whole)}, {"min", num(s.min, whole && s.min == std::floor(s.min))},
          {"max", num(s.max, whole && s.max == std::floor(s.max))}, {"step", num(s.step, whole && s.step >= 1)}};
}

json ModuleList(bool alias_names) {
  json list = json::array(), detail = json::object();
  for (const auto& m : cn::Modules()) {
    const std::string& name = alias_names ? m.label : m.name;
    list.push_back(name);
    json sliders = json::array();
    if (m.resolution_visible) sliders.push_back(SliderJson(m.resolution));
    for (const auto& s : m.sliders) sliders.push_back(SliderJson(s));
    detail[name] = {{"model_free", m.model_free}, {"sliders", sliders}};
  }
  return {{"module_list", list}, {"module_detail", detail}};
}

json ControlTypes(const std::vector<ModelEntry>& models) {
  static const std::vector<std::string> kTags = {
      "All",      "Canny",    "Depth",     "IP-Adapter", "Inpaint", "Instant-ID", "InstructP2P",
      "Lineart",  "MLSD",     "NormalMap", "OpenPose",   "Recolor", "Reference",  "Revision",
      "Scribble", "Segmentation", "Shuffle", "SoftEdge", "SparseCtrl", "T2I-Adapter", "Tile"};
  static const std::map<std::string, std::vector<std::string>> kAliases = {
      {"instructp2p", {"ip2p"}},         {"segmentation", {"seg"}},         {"normalmap", {"normal"}},
      {"t2i-adapter", {"t2i_adapter", "t2iadapter", "t2ia"}}, {"ip-adapter", {"ip_adapter", "ipadapter"}},
      {"openpose", {"openpose", "densepose"}}, {"instant-id", {"instant_id", "instantid"}},
      {"scribble", {"sketch"}},         {"tile", {"blur"}}};
  static const std::set<std::string> kUnion = {"openpose", "depth", "softedge", "scribble", "canny", "lineart",
                                               "mlsd", "normalmap", "segmentation", "inpaint", "tile"};
  json out = json::object();
  for (const auto& tag : kTags) {
    const std::string lower = absl::AsciiStrToLower(tag);
    json modules = json::array(), model_list = json::array({"None"});
    for (const auto& m : cn::Modules()) {
      if (lower == "all" || m.name == "none" || std::find(m.tags.begin(), m.tags.end(), tag) != m.tags.end()) {
        modules.push_back(m.label);
      }
    }
    std::vector<std::string> filters = {lower};
    if (auto it = kAliases.find(lower); it != kAliases.end()) filters.insert(filters.end(), it->second.begin(), it->second.end());
    if (kUnion.count(lower)) filters.push_back("union");
    for (const auto& m : models) {
      const std::string t = absl::AsciiStrToLower(m.title);
      bool match = lower == "all";
      for (const auto& f : filters) match = match || absl::StrContains(t, f);
      if (match) model_list.push_back(m.title);
    }
    std::string default_model = "None";
    if (lower != "all" && model_list.size() > 1) {
      default_model = model_list[1];
      for (size_t i = 1; i < model_list.size(); ++i) {
        const std::string title = model_list[i];
        if (absl::StrContains(title.substr(0, title.find('[')), "11")) {
          default_model = title;
          break;
        }
      }
    }
    const std::string default_option = lower == "all" ? "none" : modules.size() > 1 ? modules[1] : modules[0];
    out[tag] = {{"module_list", modules}, {"model_list", model_list}, {"default_option", default_option},
                {"default_model", default_model}};
  }
  return {{"control_types", out}};
}

absl::Status Detect(PluginState& ps, atelier_job* job, const json& a, json& result) {
  const std::string module_name = a.value("controlnet_module", "none");
  const cn::ModuleInfo* module = cn::FindModule(module_name);
  if (module == nullptr) {
    if (cn::IsNetworkModule(module_name)) {
      return absl::UnimplementedError(absl::StrCat("detect: preprocessor '", module_name,
                                                   "' needs a neural network this build does not have; preprocessors "
                                                   "that work: ", cn::ModuleNames()));
    }
    return absl::NotFoundError(absl::StrCat("detect: module '", module_name.substr(0, 64), "' not available; modules: ",
                                            cn::ModuleNames()));
  }
  const json images = a.value("controlnet_input_images", json::array());
  const json masks = a.value("controlnet_masks", json::array());
  if (!images.is_array() || images.empty()) return absl::InvalidArgumentError("detect: no image selected (controlnet_input_images)");
  if (module->needs_mask && (!masks.is_array() || masks.size() != images.size())) {
    return absl::InvalidArgumentError(absl::StrCat("detect: preprocessor ", module->name,
                                                   " requires `controlnet_masks` param (one mask per image)"));
  }
  auto number = [&](const char* key) {
    return a.contains(key) && a[key].is_number() ? a[key].get<double>() : -1.0;
  };
  const cn::PreprocessorParams params = cn::BoundParams(*module, number("controlnet_processor_res"),
                                                        number("controlnet_threshold_a"), number("controlnet_threshold_b"));
  json out_images = json::array();
  size_t total = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    if (ps.host->is_cancelled(job)) return absl::CancelledError("detect cancelled");
    if (!images[i].is_string()) return absl::InvalidArgumentError(absl::StrCat("detect: image ", i, " is not base64 text"));
    auto image = DecodeImage(ps, images[i].get<std::string>(), absl::StrCat("detect: image ", i));
    if (!image.ok()) return image.status();
    cv::Mat input = Rgb(*image);
    if (module->inpaint) {
      auto m = DecodeImage(ps, masks[i].get<std::string>(), absl::StrCat("detect: mask ", i));
      if (!m.ok()) return m.status();
      cv::Mat mask = Channel0(*m);
      if (mask.size() != input.size()) return absl::InvalidArgumentError(absl::StrCat("detect: mask ", i, " size differs from its image"));
      std::vector<cv::Mat> ch;
      cv::split(input, ch);
      ch.push_back(mask);
      cv::merge(ch, input);
    }
    auto map = cn::RunPreprocessor(*module, input, params);
    if (!map.ok()) return map.status();
    cv::Mat shown = map->channels() == 4 ? cn::DisplayMap(*map) : *map;
    at::Tensor frame = FrameTensor(shown);
    sdk::Borrow b(frame);
    atelier_error e{};
    if (atelier_status s = ps.host->emit_frame(job, static_cast<int32_t>(i), b.get(), &e); s != ATELIER_OK) {
      return sdk::FromAbi(s, e);
    }
    auto png = EncodePng(ps, shown);
    if (!png.ok()) return png.status();
    const std::string name = absl::StrCat("detect-", i, "-", module->name, ".png");
    if (atelier_status s = ps.host->emit_artifact(job, name.c_str(), "image/png", png->data(), png->size(), &e);
        s != ATELIER_OK) {
      return sdk::FromAbi(s, e);
    }
    total += png->size() * 4 / 3;
    if (total < 900 * 1024) out_images.push_back(absl::Base64Escape(*png));
    ps.host->report_progress(job, "detect", static_cast<int32_t>(i + 1), static_cast<int32_t>(images.size()), nullptr, &e);
  }
  result = {{"info", "Success"}};
  // Over the result's 1 MiB the maps come as the streamed frames only.
  if (out_images.size() == images.size()) result["images"] = out_images;
  return absl::OkStatus();
}

atelier_status Invoke(atelier_plugin_state* state, atelier_job* job, const char* method, const char* args_json,
                      atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    PluginState& ps = *Plugin(state);
    const std::string m = method != nullptr ? method : "";
    json a = json::parse(args_json != nullptr ? args_json : "null", nullptr, false);
    if (a.is_discarded()) return absl::InvalidArgumentError("the arguments are not valid JSON");
    if (!a.is_object()) a = json::object();
    json result;
    if (m == "version") {
      result = {{"version", 3}};
    } else if (m == "settings") {
      result = {{"control_net_unit_count", ps.max_units}, {"control_net_model_cache_size", ps.cache_size}};
    } else if (m == "model_list") {
      auto models = ListModels(ps);
      if (!models.ok()) return models.status();
      json list = json::array();
      std::set<std::string> stems;
      for (const auto& e : *models) {
        if (stems.insert(absl::AsciiStrToLower(e.stem)).second) list.push_back(e.title);
      }
      result = {{"model_list", list}};
    } else if (m == "module_list") {
      result = ModuleList(a.value("alias_names", false));
    } else if (m == "control_types") {
      auto models = ListModels(ps);
      if (!models.ok()) return models.status();
      result = ControlTypes(*models);
    } else if (m == "detect") {
      if (auto s = Detect(ps, job, a, result); !s.ok()) return s;
    } else if (m == "infotext") {
      // {"ControlNet 0": "Module: ..., ...", ...} -> {"args": [unit, ...]} (on_infotext_pasted).
      json units = json::array();
      for (int i = 0; i < 64; ++i) {
        const std::string key = absl::StrCat("ControlNet ", i);
        if (!a.contains(key) || !a[key].is_string()) continue;
        auto unit = cn::ParseUnitInfotext(a[key].get<std::string>());
        if (!unit.ok()) return unit.status();
        units.push_back(*unit);
      }
      result = {{"args", units}};
    } else {
      return absl::UnimplementedError(absl::StrCat("unknown method '", m.substr(0, 64),
                                                   "'; methods: version, settings, model_list, module_list, "
                                                   "control_types, detect, infotext"));
    }
    atelier_error e{};
    return sdk::FromAbi(ps.host->set_invoke_result(job, result.dump().c_str(), &e), e);
  });
}

constexpr const char* kSchema = R"json({
  "type": "object",
  "description": "sd-webui-controlnet units: {\"args\": [unit, ...]}",
  "properties": {"args": {"type": "array", "items": {"$ref": "#/definitions/unit"}}},
  "definitions": {
    "unit": {
      "type": "object",
      "properties": {
        "enabled": {"type": "boolean", "default": false},
        "module": {"type": "string", "default": "none", "description": "preprocessor (Plugins.Invoke controlnet module_list)"},
        "model": {"type": "string", "default": "None", "description": "\"stem [hash8]\", a bare name or a substring (model_list)"},
        "weight": {"type": "number", "minimum": 0, "maximum": 2, "default": 1.0},
        "image": {"description": "base64 image, {\"image\", \"mask\"} or [image, mask]; alias input_image"},
        "mask": {"type": "string", "description": "base64 image; alias mask_image"},
        "resize_mode": {"enum": ["Just Resize", "Crop and Resize", "Resize and Fill", 0, 1, 2], "default": "Crop and Resize"},
        "low_vram": {"type": "boolean", "default": false},
        "processor_res": {"type": "number", "default": -1, "description": "-1: the module's default (512)"},
        "threshold_a": {"type": "number", "default": -1},
        "threshold_b": {"type": "number", "default": -1},
        "guidance_start": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
        "guidance_end": {"type": "number", "minimum": 0, "maximum": 1, "default": 1.0},
        "pixel_perfect": {"type": "boolean", "default": false},
        "control_mode": {"enum": ["Balanced", "My prompt is more important", "ControlNet is more important", 0, 1, 2], "default": "Balanced"},
        "inpaint_crop_input_image": {"type": "boolean", "default": true},
        "hr_option": {"enum": ["Both", "Low res only", "High res only", 0, 1, 2], "default": "Both"},
        "save_detected_map": {"type": "boolean", "default": true},
        "advanced_weighting": {"type": "array", "items": {"type": "number"}, "minItems": 13, "maxItems": 13}
      }
    }
  }
})json";

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                                        uint32_t host_abi_minor) {
  static const atelier_plugin_descriptor descriptor = [] {
    atelier_plugin_descriptor d = sdk::Descriptor(kName, "1.0.0", 100);
    d.description = "sd-webui-controlnet: units, control modes, guidance window, model-free preprocessors";
    d.params_schema_json = kSchema;
    d.init = Init;
    d.finalize = Finalize;
    d.process = Process;
    d.job_end = JobEnd;
    d.unet_residuals = UnetResiduals;
    d.shape_job = ShapeJob;
    d.model_unloaded = ModelUnloaded;
    d.pass_started = PassStarted;
    d.frames_finish = FramesFinish;
    d.invoke = Invoke;
    d.schedule = Schedule;
    d.model_call = ModelCall;
    d.self_attention = SelfAttention;
    d.unet_block_end = UnetBlockEnd;
    d.frame = Frame;
    return d;
  }();
  return host_abi_major == ATELIER_PLUGIN_ABI_MAJOR && host_abi_minor >= 2 ? &descriptor : nullptr;
}
