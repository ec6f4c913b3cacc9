#include "host/host_services.h"

#include <cstring>
#include <exception>
#include <string>

#include "absl/strings/str_cat.h"
#include "atelier/plugin_tensor.hpp"
#include "engine/image_codec.h"
#include "engine/tensor_view.h"
#include "host/abi_handles.h"
#include "util/log.h"

namespace atelier::host {
namespace {

const PluginHostContext* ContextOf(const atelier_host_api* host) {
  return host == nullptr ? nullptr : static_cast<const PluginHostContext*>(host->host_context);
}

atelier_status FromAbsl(const absl::Status& status, atelier_error* err) {
  if (status.ok()) return ATELIER_OK;
  atelier_status code = ATELIER_INTERNAL;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument: code = ATELIER_INVALID_ARGUMENT; break;
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

void HostLog(const atelier_host_api* host, int32_t level, const char* message) {
  const PluginHostContext* context = ContextOf(host);
  const std::string line = absl::StrCat("plugin ", context ? context->plugin_name : "?", ": ",
                                        message ? message : "");
  LogLevel log_level = LogLevel::kInfo;
  if (level <= ATELIER_LOG_DEBUG) log_level = LogLevel::kDebug;
  else if (level == ATELIER_LOG_WARNING) log_level = LogLevel::kWarning;
  else if (level >= ATELIER_LOG_ERROR) log_level = LogLevel::kError;
  Log(log_level, line);
}

int32_t HostIsCancelled(atelier_job* job) { return job != nullptr && job->sink->IsCancelled() ? 1 : 0; }

atelier_status HostReportProgress(atelier_job* job, const char* stage, int32_t done, int32_t total,
                                  const char* text, atelier_error* err) {
  if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "report_progress: null job");
  return FromAbsl(job->sink->ReportPluginProgress(job->plugin_name, stage ? stage : "", done, total,
                                                  text ? text : ""),
                  err);
}

// Converts a frame (uint8 [H, W, 3|4] or float32 [3, H, W] in [0, 1], CPU) to interleaved 8-bit pixels.
absl::StatusOr<engine::PixelImage> FramePixels(const DLTensor* image) {
  if (image == nullptr) return absl::InvalidArgumentError("emit_frame: null image");
  if (image->device.device_type != kDLCPU) return absl::InvalidArgumentError("emit_frame: image must be on the CPU");
  at::Tensor t = plugin::View(image);
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
  if (job == nullptr) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "emit_artifact: null job");
  if (name == nullptr || *name == '\0' || mime_type == nullptr || (data == nullptr && size > 0)) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "emit_artifact: name, mime_type and data are required");
  }
  return FromAbsl(job->sink->EmitArtifact(job->plugin_name, name, mime_type,
                                          std::string(static_cast<const char*>(data), size)),
                  err);
}

atelier_status HostTensorFileOpen(const atelier_host_api* host, int32_t folder, const char* name,
                                  atelier_tensor_file** out, atelier_error* err) {
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
  auto file = engine::SafetensorsFile::Open(*path);
  if (!file.ok()) return FromAbsl(file.status(), err);
  *out = new atelier_tensor_file{*std::move(file)};
  return ATELIER_OK;
}

int64_t HostTensorFileCount(const atelier_tensor_file* file) {
  return file == nullptr ? 0 : static_cast<int64_t>(file->file->tensors().size());
}

atelier_status ExportEntry(const atelier_tensor_file* file, const engine::TensorEntry& entry,
                           DLManagedTensor** tensor, atelier_error* err) {
  try {
    *tensor = plugin::Export(engine::TensorView(file->file, entry));
    return ATELIER_OK;
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INTERNAL, "tensor '%s': %s", entry.name.c_str(), e.what());
  }
}

atelier_status HostTensorFileGet(const atelier_tensor_file* file, int64_t index, const char** name,
                                 DLManagedTensor** tensor, atelier_error* err) {
  if (file == nullptr || tensor == nullptr) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_get: file and tensor are required");
  }
  const auto& tensors = file->file->tensors();
  if (index < 0 || index >= static_cast<int64_t>(tensors.size())) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_get: index %lld outside [0, %zu)",
                        static_cast<long long>(index), tensors.size());
  }
  const engine::TensorEntry& entry = tensors[static_cast<size_t>(index)];
  if (name != nullptr) *name = entry.name.c_str();
  return ExportEntry(file, entry, tensor, err);
}

atelier_status HostTensorFileFind(const atelier_tensor_file* file, const char* name, DLManagedTensor** tensor,
                                  atelier_error* err) {
  if (file == nullptr || name == nullptr || tensor == nullptr) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "tensor_file_find: file, name and tensor are required");
  }
  const engine::TensorEntry* entry = file->file->Find(name);
  if (entry == nullptr) {
    return atelier_fail(err, ATELIER_NOT_FOUND, "no tensor '%s' in %s", name,
                        file->file->path().filename().c_str());
  }
  return ExportEntry(file, *entry, tensor, err);
}

void HostTensorFileClose(atelier_tensor_file* file) { delete file; }

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
  return api;
}

absl::Status PluginStatus(atelier_status code, const std::string& plugin, const char* hook,
                          const atelier_error& error) {
  if (code == ATELIER_OK) return absl::OkStatus();
  const size_t length = strnlen(error.message, sizeof(error.message));
  const std::string detail = length > 0 ? std::string(error.message, length) : "(no message)";
  const std::string message = absl::StrCat("plugin '", plugin, "' failed in ", hook, ": ", detail);
  switch (code) {
    case ATELIER_INVALID_ARGUMENT: return absl::InvalidArgumentError(message);
    case ATELIER_NOT_FOUND: return absl::NotFoundError(message);
    case ATELIER_UNSUPPORTED: return absl::FailedPreconditionError(message);
    case ATELIER_UNAVAILABLE: return absl::UnavailableError(message);
    case ATELIER_CANCELLED: return absl::CancelledError(message);
    case ATELIER_RESOURCE_EXHAUSTED: return absl::ResourceExhaustedError(message);
    default: return absl::InternalError(message);
  }
}

}  // namespace atelier::host
