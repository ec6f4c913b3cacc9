#include "host/host_services.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <vector>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "atelier/sdk/tensor.h"
#include "image/image_codec.h"
#include "engine/io/file_hash.h"
#include "engine/io/tensor_file.h"
#include "engine/io/tensor_view.h"
#include "image/image_formats.h"
#include "host/abi_handles.h"
#include "util/log.h"
#include "util/utf8.h"

namespace atelier::host {
namespace {

const PluginHostContext* ContextOf(const atelier_host_api* host) {
  return host == nullptr ? nullptr : static_cast<const PluginHostContext*>(host->host_context);
}

atelier_status FromAbsl(const absl::Status& status, atelier_error* err) {
  if (status.ok()) return ATELIER_OK;
  atelier_status code = ATELIER_INTERNAL;
  switch (status.code()) {
    // A refused or damaged file (a pickle that would run code, truncated data) is the caller's input problem.
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kDataLoss: code = ATELIER_INVALID_ARGUMENT; break;
    case absl::StatusCode::kNotFound: code = ATELIER_NOT_FOUND; break;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented: code = ATELIER_UNSUPPORTED; break;
    case absl::StatusCode::kUnavailable: code = ATELIER_UNAVAILABLE; break;
    case absl::StatusCode::kCancelled: code = ATELIER_CANCELLED; break;
    case absl::StatusCode::kResourceExhausted: code = ATELIER_RESOURCE_EXHAUSTED; break;
    default: break;
  }
  return atelier_fail(err, code, "%s", std::string(status.message()).c_str());
}

// Runs a host function's body so that no C++ exception unwinds into the plugin's (C) frames: allocation failures
// are RESOURCE_EXHAUSTED, anything else INTERNAL, with the function's name.
template <typename Body>
atelier_status Guarded(atelier_error* err, const char* function, Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "%s: out of memory", function);
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INTERNAL, "%s: %s", function, e.what());
  } catch (...) {
    return atelier_fail(err, ATELIER_INTERNAL, "%s: unknown error", function);
  }
}

void HostLog(const atelier_host_api* host, int32_t level, const char* message) {
  try {
    const PluginHostContext* context = ContextOf(host);
    const std::string line = absl::StrCat("plugin ", context ? context->plugin_name : "?", ": ",
                                          message ? message : "");
    LogLevel log_level = LogLevel::kInfo;
    if (level <= ATELIER_LOG_DEBUG) log_level = LogLevel::kDebug;
    else if (level == ATELIER_LOG_WARNING) log_level = LogLevel::kWarning;
    else if (level >= ATELIER_LOG_ERROR) log_level = LogLevel::kError;
    Log(log_level, line);
  } catch (...) {
    // Logging must never fail the plugin.
  }
}

int32_t HostIsCancelled(atelier_job* job) { return job != nullptr && job->sink->IsCancelled() ? 1 : 0; }

atelier_status HostReportProgress(atelier_job* job, const char* stage, int32_t done, int32_t total,
                                  const char* text, atelier_error* err) {
  return Guarded(err, "report_progress", [&]() -> atelier_status {
    if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "report_progress: null job");
    return FromAbsl(job->sink->ReportPluginProgress(job->plugin_name, ValidUtf8(stage ? stage : ""), done, total,
                                                    ValidUtf8(text ? text : "")),
                    err);
  });
}

// Converts a frame (uint8 [H, W, 3|4] or float32 [3, H, W] in [0, 1], CPU) to interleaved 8-bit pixels.
absl::StatusOr<engine::PixelImage> FramePixels(const DLTensor* image) {
  if (image == nullptr) return absl::InvalidArgumentError("emit_frame: null image");
  if (image->device.device_type != kDLCPU) return absl::InvalidArgumentError("emit_frame: image must be on the CPU");
  at::Tensor t = sdk::View(image);
  at::Tensor hwc;
  if (t.scalar_type() == at::kByte && t.dim() == 3 && (t.size(2) == 3 || t.size(2) == 4)) {
    hwc = t.contiguous();
  } else if (t.scalar_type() == at::kFloat && t.dim() == 3 && t.size(0) == 3) {
    hwc = t.clamp(0, 1).mul(255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("emit_frame: expected uint8 [H, W, 3|4] or float32 [3, H, W], got ",
                                                   std::string(c10::toString(t.scalar_type())), " ",
                                                   c10::str(t.sizes())));
  }
  engine::PixelImage pixels;
  pixels.height = static_cast<int>(hwc.size(0));
  pixels.width = static_cast<int>(hwc.size(1));
  pixels.channels = static_cast<int>(hwc.size(2));
  pixels.pixels.assign(hwc.data_ptr<uint8_t>(), hwc.data_ptr<uint8_t>() + hwc.numel());
  return pixels;
}

atelier_status HostEmitFrame(atelier_job* job, int32_t index, const DLTensor* image, atelier_error* err) {
  if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "emit_frame: null job");
  try {
    auto pixels = FramePixels(image);
    if (!pixels.ok()) return FromAbsl(pixels.status(), err);
    auto png = engine::EncodePng(*pixels, {}, 1);
    if (!png.ok()) return FromAbsl(png.status(), err);
    return FromAbsl(job->sink->EmitFrame(job->plugin_name, index, *std::move(png), pixels->width, pixels->height),
                    err);
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "emit_frame: %s", e.what());
  }
}

atelier_status HostEmitArtifact(atelier_job* job, const char* name, const char* mime_type, const void* data,
                                size_t size, atelier_error* err) {
  return Guarded(err, "emit_artifact", [&]() -> atelier_status {
    if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "emit_artifact: null job");
    if (name == nullptr || *name == '\0' || mime_type == nullptr || (data == nullptr && size > 0)) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "emit_artifact: name, mime_type and data are required");
    }
    return FromAbsl(job->sink->EmitArtifact(job->plugin_name, ValidUtf8(name), ValidUtf8(mime_type),
                                            std::string(static_cast<const char*>(data), size)),
                    err);
  });
}

atelier_status HostTensorFileOpen(const atelier_host_api* host, int32_t folder, const char* name,
                                  atelier_tensor_file** out, atelier_error* err) {
  return Guarded(err, "tensor_file_open", [&]() -> atelier_status {
    const PluginHostContext* context = ContextOf(host);
    if (out == nullptr || name == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_open: name and out are required");
    }
    *out = nullptr;
    if (folder < 0 || folder >= engine::kModelFolderCount) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_open: unknown folder %d (ATELIER_FOLDER_*)",
                          folder);
    }
    if (context == nullptr || context->environment == nullptr || context->environment->model_folders == nullptr) {
      return atelier_fail(err, ATELIER_NOT_FOUND, "tensor_file_open: the daemon has no models directory");
    }
    auto path = context->environment->model_folders->Resolve(static_cast<engine::ModelFolder>(folder), name);
    if (!path.ok()) return FromAbsl(path.status(), err);
    auto handle = std::make_unique<atelier_tensor_file>();
    handle->label = path->filename().string();
    auto file = engine::SafetensorsFile::Open(*path);
    if (file.ok()) {
      handle->file = *std::move(file);
    } else {
      // Not safetensors: a PyTorch pickle (.ckpt/.pt/.pth/.pkl), read without running anything in it.
      absl::StatusOr<engine::TensorSet> set;
      try {
        set = engine::ReadTensorSet(*path);
      } catch (const std::exception& e) {
        set = absl::InternalError(e.what());
      }
      if (!set.ok()) {
        return FromAbsl(path->extension() == ".safetensors" ? file.status() : set.status(), err);
      }
      handle->tensors = std::move(set->tensors);
    }
    *out = handle.release();
    return ATELIER_OK;
  });
}

int64_t HostTensorFileCount(const atelier_tensor_file* file) {
  if (file == nullptr) return 0;
  return static_cast<int64_t>(file->file ? file->file->tensors().size() : file->tensors.size());
}

atelier_status ExportOwned(const std::string& name, const at::Tensor& tensor, DLManagedTensor** out,
                           atelier_error* err) {
  try {
    *out = sdk::Export(tensor);
    return ATELIER_OK;
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INTERNAL, "tensor '%s': %s", name.c_str(), e.what());
  }
}

atelier_status ExportEntry(const atelier_tensor_file* file, const engine::TensorEntry& entry,
                           DLManagedTensor** tensor, atelier_error* err) {
  try {
    *tensor = sdk::Export(engine::TensorView(file->file, entry));
    return ATELIER_OK;
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INTERNAL, "tensor '%s': %s", entry.name.c_str(), e.what());
  }
}

atelier_status HostTensorFileGet(const atelier_tensor_file* file, int64_t index, const char** name,
                                 DLManagedTensor** tensor, atelier_error* err) {
  return Guarded(err, "tensor_file_get", [&]() -> atelier_status {
    if (file == nullptr || tensor == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_get: file and tensor are required");
    }
    const int64_t count = HostTensorFileCount(file);
    if (index < 0 || index >= count) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_get: index %lld outside [0, %lld)",
                          static_cast<long long>(index), static_cast<long long>(count));
    }
    if (!file->file) {
      const auto& [tensor_name, value] = file->tensors[static_cast<size_t>(index)];
      if (name != nullptr) *name = tensor_name.c_str();
      return ExportOwned(tensor_name, value, tensor, err);
    }
    const engine::TensorEntry& entry = file->file->tensors()[static_cast<size_t>(index)];
    if (name != nullptr) *name = entry.name.c_str();
    return ExportEntry(file, entry, tensor, err);
  });
}

atelier_status HostTensorFileFind(const atelier_tensor_file* file, const char* name, DLManagedTensor** tensor,
                                  atelier_error* err) {
  return Guarded(err, "tensor_file_find", [&]() -> atelier_status {
    if (file == nullptr || name == nullptr || tensor == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_find: file, name and tensor are required");
    }
    if (!file->file) {
      for (const auto& [tensor_name, value] : file->tensors) {
        if (tensor_name == name) return ExportOwned(tensor_name, value, tensor, err);
      }
      return atelier_fail(err, ATELIER_NOT_FOUND, "no tensor '%s' in %s", name, file->label.c_str());
    }
    const engine::TensorEntry* entry = file->file->Find(name);
    if (entry == nullptr) {
      return atelier_fail(err, ATELIER_NOT_FOUND, "no tensor '%s' in %s", name, file->label.c_str());
    }
    return ExportEntry(file, *entry, tensor, err);
  });
}

void HostTensorFileClose(atelier_tensor_file* file) { delete file; }

// ---- ABI 1.1 ----

void* HostCudaStream(const atelier_host_api*) {
  // The engine computes on the device's default stream (it never makes its own): NULL is that stream on CUDA, and
  // the answer on the CPU.
  return nullptr;
}

atelier_status HostImageDecode(const atelier_host_api*, const void* data, size_t size, DLManagedTensor** image,
                               atelier_error* err) {
  if (image == nullptr || (data == nullptr && size > 0)) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "image_decode: data and image are required");
  }
  *image = nullptr;
  try {
    auto decoded = engine::DecodeImage(absl::string_view(static_cast<const char*>(data), size));
    if (!decoded.ok()) return FromAbsl(decoded.status(), err);
    at::Tensor t = at::empty({decoded->height, decoded->width, decoded->channels}, at::kByte);
    std::memcpy(t.data_ptr<uint8_t>(), decoded->pixels.data(), decoded->pixels.size());
    if (decoded->channels == 1) t = t.expand({-1, -1, 3}).contiguous();
    *image = sdk::Export(t);
    return ATELIER_OK;
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "image_decode: %s", e.what());
  }
}

atelier_status HostImageEncode(const atelier_host_api*, const DLTensor* image, const char* format, int32_t quality,
                               const char* infotext, atelier_bytes* out, atelier_error* err) {
  if (out == nullptr || format == nullptr) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "image_encode: format and out are required");
  }
  *out = atelier_bytes{};
  engine::ImageEncodeOptions options;
  const std::string f = format;
  if (f == "png") options.format = engine::ImageFileFormat::kPng;
  else if (f == "jpeg" || f == "jpg") options.format = engine::ImageFileFormat::kJpeg;
  else if (f == "webp") options.format = engine::ImageFileFormat::kWebp;
  else return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "image_encode: format '%s' is not png, jpeg or webp", format);
  if (options.format != engine::ImageFileFormat::kPng && (quality < 1 || quality > 100)) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "image_encode: quality %d is outside 1..100", quality);
  }
  options.quality = std::clamp(quality, 1, 100);
  options.infotext = infotext != nullptr ? infotext : "";
  try {
    auto pixels = FramePixels(image);
    if (!pixels.ok()) return FromAbsl(pixels.status(), err);
    if (pixels->channels == 4) {  // alpha is dropped: WebUI's outputs are RGB
      std::vector<uint8_t> rgb;
      rgb.reserve(pixels->pixels.size() / 4 * 3);
      for (size_t i = 0; i < pixels->pixels.size(); i += 4) rgb.insert(rgb.end(), &pixels->pixels[i], &pixels->pixels[i] + 3);
      pixels->pixels = std::move(rgb);
      pixels->channels = 3;
    }
    auto encoded = engine::EncodeImage(*pixels, options);
    if (!encoded.ok()) return FromAbsl(encoded.status(), err);
    auto* owned = new std::string(*std::move(encoded));
    out->data = reinterpret_cast<const uint8_t*>(owned->data());
    out->size = owned->size();
    out->owner = owned;
    return ATELIER_OK;
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "image_encode: %s", e.what());
  }
}

void HostBytesFree(atelier_bytes* bytes) {
  if (bytes == nullptr) return;
  delete static_cast<std::string*>(bytes->owner);
  *bytes = atelier_bytes{};
}

atelier_status NeedsJobHooks(atelier_job* job, const char* function, atelier_error* err) {
  if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "%s: null job", function);
  if (job->hooks == nullptr) {
    return atelier_fail(err, ATELIER_UNSUPPORTED, "%s: only inside a generation job (not from invoke)", function);
  }
  return ATELIER_OK;
}

atelier_status HostAddInfotext(atelier_job* job, int32_t image_index, const char* key, const char* value,
                               atelier_error* err) {
  return Guarded(err, "add_infotext", [&]() -> atelier_status {
    if (atelier_status s = NeedsJobHooks(job, "add_infotext", err); s != ATELIER_OK) return s;
    return FromAbsl(job->hooks->AddInfotext(image_index, ValidUtf8(key ? key : ""), ValidUtf8(value ? value : "")),
                    err);
  });
}

atelier_status HostModelCallNext(atelier_model_call* call, const atelier_model_call_args* args, DLManagedTensor** eps,
                                 atelier_error* err) {
  if (call == nullptr || args == nullptr || eps == nullptr) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "model_call_next: call, args and eps are required");
  }
  *eps = nullptr;
  try {
    auto out = call->next(*args);
    if (!out.ok()) return FromAbsl(out.status(), err);
    *eps = sdk::Export(*out);
    return ATELIER_OK;
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INTERNAL, "model_call_next: %s", e.what());
  }
}

atelier_status HostPushFrame(atelier_job* job, const atelier_frame* frame, atelier_error* err) {
  if (atelier_status s = NeedsJobHooks(job, "push_frame", err); s != ATELIER_OK) return s;
  if (frame == nullptr || frame->image == nullptr) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "push_frame: a frame with an image is required");
  }
  try {
    JobFrame f;
    f.index = frame->index;
    f.seed = frame->seed;
    f.subseed = frame->subseed;
    f.infotext = ValidUtf8(frame->infotext != nullptr ? frame->infotext : "");
    f.image = sdk::View(frame->image).to(at::kCPU, at::kFloat).clone();
    f.interrupted = frame->interrupted != 0;
    return FromAbsl(job->hooks->PushFrame(job, f), err);
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "push_frame: %s", e.what());
  }
}

atelier_status HostFeedPlugin(atelier_job* job, const char* plugin, const char* args_json, atelier_error* err) {
  return Guarded(err, "feed_plugin", [&]() -> atelier_status {
    if (atelier_status s = NeedsJobHooks(job, "feed_plugin", err); s != ATELIER_OK) return s;
    return FromAbsl(job->hooks->FeedPlugin(job->plugin_name, plugin ? plugin : "", args_json ? args_json : "null"),
                    err);
  });
}

atelier_status HostCallPlugin(atelier_job* job, const char* plugin, const char* method, const char* args_json,
                              atelier_bytes* result, atelier_error* err) {
  return Guarded(err, "call_plugin", [&]() -> atelier_status {
    if (result != nullptr) *result = atelier_bytes{};
    if (job == nullptr || plugin == nullptr || method == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "call_plugin: job, plugin and method are required");
    }
    if (!job->call_plugin) return atelier_fail(err, ATELIER_UNAVAILABLE, "call_plugin: not inside a job");
    auto called = job->call_plugin(plugin, method, args_json ? args_json : "null");
    if (!called.ok()) return FromAbsl(called.status(), err);
    if (result != nullptr) {
      auto* owned = new std::string(*std::move(called));
      result->data = reinterpret_cast<const uint8_t*>(owned->data());
      result->size = owned->size();
      result->owner = owned;
    }
    return ATELIER_OK;
  });
}

// ---- ABI 1.2 ----

atelier_status HostModelList(const atelier_host_api* host, int32_t folder, atelier_bytes* json, atelier_error* err) {
  return Guarded(err, "model_list", [&]() -> atelier_status {
    if (json == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "model_list: json is required");
    *json = atelier_bytes{};
    if (folder < 0 || folder >= engine::kModelFolderCount) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "model_list: unknown folder %d (ATELIER_FOLDER_*)", folder);
    }
    const PluginHostContext* context = ContextOf(host);
    nlohmann::json list = nlohmann::json::array();
    if (context != nullptr && context->environment != nullptr && context->environment->model_folders != nullptr) {
      const engine::ModelFolders& folders = *context->environment->model_folders;
      for (const auto& e : folders.List(static_cast<engine::ModelFolder>(folder))) {
        auto path = folders.Resolve(e.folder, e.filename);
        std::string hash = "NOFILE";
        if (path.ok()) {
          auto h = engine::ShortHash(*path);
          hash = h.ok() ? *h : "NOHASH";
        }
        list.push_back({{"name", e.name}, {"filename", e.filename}, {"format", e.format},
                        {"size_bytes", e.size_bytes}, {"short_hash", hash}});
      }
    }
    auto* owned = new std::string(list.dump());
    json->data = reinterpret_cast<const uint8_t*>(owned->data());
    json->size = owned->size();
    json->owner = owned;
    return ATELIER_OK;
  });
}

atelier_status HostVaeEncode(atelier_job* job, const DLTensor* image, DLManagedTensor** latent, atelier_error* err) {
  return Guarded(err, "vae_encode", [&]() -> atelier_status {
    if (latent == nullptr || image == nullptr || job == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "vae_encode: job, image and latent are required");
    }
    *latent = nullptr;
    if (!job->vae_encode) return atelier_fail(err, ATELIER_UNSUPPORTED, "vae_encode: only during a generation");
    const at::Tensor in = sdk::View(image);
    if (in.dim() != 4 || in.size(1) != 3 || in.size(2) % 8 != 0 || in.size(3) % 8 != 0 || in.size(2) == 0 ||
        in.size(3) == 0) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT,
                          "vae_encode: the image must be float [n, 3, H, W] with H, W multiples of 8");
    }
    auto out = job->vae_encode(in.to(at::kFloat).clone());
    if (!out.ok()) return FromAbsl(out.status(), err);
    *latent = sdk::Export(*out);
    return ATELIER_OK;
  });
}

atelier_status HostTextCondition(atelier_job* job, const char* prompt, DLManagedTensor** cond, atelier_error* err) {
  return Guarded(err, "text_condition", [&]() -> atelier_status {
    if (cond == nullptr || prompt == nullptr || job == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "text_condition: job, prompt and cond are required");
    }
    *cond = nullptr;
    if (!job->text_condition) return atelier_fail(err, ATELIER_UNSUPPORTED, "text_condition: only during a generation");
    auto out = job->text_condition(prompt);
    if (!out.ok()) return FromAbsl(out.status(), err);
    *cond = sdk::Export(*out);
    return ATELIER_OK;
  });
}

// ---- ABI 1.4 ----

// Hands `text` to the caller as atelier_bytes (released with bytes_free).
void GiveBytes(std::string text, atelier_bytes* out) {
  auto* owned = new std::string(std::move(text));
  out->data = reinterpret_cast<const uint8_t*>(owned->data());
  out->size = owned->size();
  out->owner = owned;
}

atelier_status HostNextNoise(atelier_job* job, DLManagedTensor** noise, atelier_error* err) {
  return Guarded(err, "next_noise", [&]() -> atelier_status {
    if (noise == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "next_noise: noise is required");
    *noise = nullptr;
    if (atelier_status s = NeedsJobHooks(job, "next_noise", err); s != ATELIER_OK) return s;
    auto out = job->hooks->NextNoise();
    if (!out.ok()) return FromAbsl(out.status(), err);
    *noise = sdk::Export(*out);
    return ATELIER_OK;
  });
}

atelier_status HostSampleNext(atelier_sample_call* call, const DLTensor* noise, DLManagedTensor** latent,
                              int32_t* interrupted, atelier_error* err) {
  return Guarded(err, "sample_next", [&]() -> atelier_status {
    if (call == nullptr || noise == nullptr || latent == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "sample_next: call, noise and latent are required");
    }
    *latent = nullptr;
    if (interrupted != nullptr) *interrupted = 0;
    auto out = call->next(sdk::View(noise));
    if (!out.ok()) return FromAbsl(out.status(), err);
    *latent = sdk::Export(out->latent.to(at::kFloat));
    if (interrupted != nullptr) *interrupted = out->interrupted ? 1 : 0;
    return ATELIER_OK;
  });
}

atelier_status HostScriptArgs(atelier_job* job, const char* plugin, atelier_bytes* json, atelier_error* err) {
  return Guarded(err, "script_args", [&]() -> atelier_status {
    if (json == nullptr || plugin == nullptr) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "script_args: plugin and json are required");
    }
    *json = atelier_bytes{};
    if (atelier_status s = NeedsJobHooks(job, "script_args", err); s != ATELIER_OK) return s;
    auto args = job->hooks->ScriptArgs(plugin);
    if (!args.ok()) return FromAbsl(args.status(), err);
    GiveBytes(*std::move(args), json);
    return ATELIER_OK;
  });
}

atelier_status HostSetInvokeResult(atelier_job* job, const char* json, atelier_error* err) {
  return Guarded(err, "set_invoke_result", [&]() -> atelier_status {
    if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "set_invoke_result: null job");
    const std::string text = json != nullptr && *json != '\0' ? json : "null";
    // It travels in the job's last message: large data belongs in an artifact (which is chunked).
    constexpr size_t kMaxResult = 1 << 20;
    if (text.size() > kMaxResult) {
      return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED,
                          "set_invoke_result: %zu bytes; at most %zu (send large data with emit_artifact)",
                          text.size(), kMaxResult);
    }
    if (!nlohmann::json::accept(text)) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "set_invoke_result: not a JSON value (in UTF-8)");
    }
    job->invoke_result = text;
    return ATELIER_OK;
  });
}

}  // namespace

atelier_host_api MakeHostApi(PluginHostContext* context) {
  atelier_host_api api{};
  api.struct_size = sizeof(atelier_host_api);
  api.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
  api.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
  api.host_version = context->environment->host_version.c_str();
  api.device = context->environment->device.c_str();
  api.host_context = context;
  api.log = HostLog;
  api.is_cancelled = HostIsCancelled;
  api.report_progress = HostReportProgress;
  api.emit_frame = HostEmitFrame;
  api.emit_artifact = HostEmitArtifact;
  api.tensor_file_open = HostTensorFileOpen;
  api.tensor_file_count = HostTensorFileCount;
  api.tensor_file_get = HostTensorFileGet;
  api.tensor_file_find = HostTensorFileFind;
  api.tensor_file_close = HostTensorFileClose;
  api.compute_dtype = context->environment->compute_dtype.c_str();
  api.engine_abi = context->environment->engine_abi.c_str();
  api.cuda_stream = HostCudaStream;
  api.image_decode = HostImageDecode;
  api.image_encode = HostImageEncode;
  api.bytes_free = HostBytesFree;
  api.add_infotext = HostAddInfotext;
  api.model_call_next = HostModelCallNext;
  api.push_frame = HostPushFrame;
  api.feed_plugin = HostFeedPlugin;
  api.call_plugin = HostCallPlugin;
  api.set_invoke_result = HostSetInvokeResult;
  api.model_list = HostModelList;
  api.vae_encode = HostVaeEncode;
  api.text_condition = HostTextCondition;
  api.next_noise = HostNextNoise;
  api.sample_next = HostSampleNext;
  api.script_args = HostScriptArgs;
  return api;
}

absl::Status PluginStatus(atelier_status code, const std::string& plugin, const char* hook,
                          const atelier_error& error) {
  if (code == ATELIER_OK) return absl::OkStatus();
  const size_t length = strnlen(error.message, sizeof(error.message));
  // A message cut at the buffer's end may split a character: clients need valid UTF-8.
  const std::string detail = length > 0 ? ValidUtf8(absl::string_view(error.message, length)) : "(no message)";
  const std::string message = absl::StrCat("plugin '", plugin, "' failed in ", hook, ": ", detail);
  switch (code) {
    case ATELIER_INVALID_ARGUMENT: return absl::InvalidArgumentError(message);
    case ATELIER_NOT_FOUND: return absl::NotFoundError(message);
    case ATELIER_UNSUPPORTED: return absl::FailedPreconditionError(message);
    case ATELIER_UNAVAILABLE: return absl::UnavailableError(message);
    case ATELIER_CANCELLED: return absl::CancelledError(message);
    case ATELIER_RESOURCE_EXHAUSTED: return absl::ResourceExhaustedError(message);
    case ATELIER_UNIMPLEMENTED: return absl::UnimplementedError(message);
    case ATELIER_PERMISSION_DENIED: return absl::PermissionDeniedError(message);
    default: return absl::InternalError(message);
  }
}

}  // namespace atelier::host
