#include "server/options_service.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/generation_settings.h"
#include "server/grpc_status.h"
#include "server/request_validation.h"

namespace atelier::server {
namespace {

constexpr const char* kCheckpointKey = "sd_model_checkpoint";
constexpr const char* kVaeKey = "sd_vae";

// Whether `named` (a title, filename or name) is the checkpoint already loaded.
bool IsLoaded(const std::string& named, const v1::ModelsStatus& status) {
  if (named.empty() || status.checkpoint().empty()) return false;
  const std::string& title = status.checkpoint();  // "name.safetensors [hash10]"
  const std::string filename = title.substr(0, title.find(" ["));
  return named == title || named == filename || named == std::filesystem::path(filename).replace_extension().string();
}

}  // namespace

void OptionsService::Fill(v1::OptionsResponse* response) const {
  *response->mutable_options() = options_.Snapshot();
  v1::ModelsStatus status;
  models_.FillStatus(&status);
  auto& fields = *response->mutable_options()->mutable_fields();
  if (status.checkpoint().empty()) {
    fields[kCheckpointKey].set_null_value(google::protobuf::NULL_VALUE);
  } else {
    fields[kCheckpointKey].set_string_value(status.checkpoint());
  }
  fields[kVaeKey].set_string_value(models_.VaeSetting());
  for (const auto& [key, value] : DaemonOptions::Defaults().fields()) response->add_honoured(key);
  response->add_honoured(kCheckpointKey);
  response->add_honoured(kVaeKey);
}

grpc::ServerUnaryReactor* OptionsService::GetOptions(grpc::CallbackServerContext* context, const v1::GetOptionsRequest*,
                                                     v1::OptionsResponse* response) {
  Fill(response);
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OptionsService::SetOptions(grpc::CallbackServerContext* context,
                                                     const v1::SetOptionsRequest* request,
                                                     v1::OptionsResponse* response) {
  if (!callers_.Of(*context).admin) {
    return FinishUnary(context, grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                             "options change every client's jobs: only an admin token may set them"));
  }
  google::protobuf::Struct changes = request->options();
  std::string checkpoint, vae;
  bool load = false;
  v1::ModelsStatus status;
  models_.FillStatus(&status);
  auto& fields = *changes.mutable_fields();
  if (auto it = fields.find(kCheckpointKey); it != fields.end()) {
    if (!it->second.has_string_value() && !it->second.has_null_value()) {
      return FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                               "sd_model_checkpoint must be a checkpoint's title, filename or name"));
    }
    checkpoint = it->second.string_value();
    load = !checkpoint.empty() && !IsLoaded(checkpoint, status);
    fields.erase(it);
  }
  if (auto it = fields.find(kVaeKey); it != fields.end()) {
    if (!it->second.has_string_value()) {
      return FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                               "sd_vae must be \"Automatic\", \"None\" or a VAE's filename"));
    }
    vae = it->second.string_value();
    if (vae != models_.VaeSetting()) load = true;
    fields.erase(it);
  }
  // The values are checked as a job's override_settings would be.
  v1::GenerateRequest probe;
  probe.set_prompt("options");
  *probe.mutable_override_settings() = changes;
  absl::Status checked = ValidateAndFillDefaults(probe, nullptr);
  if (checked.ok()) checked = JobSettingsFromRequest(probe).status();
  if (!checked.ok()) return FinishUnary(context, ToGrpcStatus(checked));
  if (!load) {
    options_.Set(changes);
    Fill(response);
    return FinishUnary(context, grpc::Status::OK);
  }
  if (checkpoint.empty()) checkpoint = status.checkpoint();
  if (vae.empty()) vae = models_.VaeSetting();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  models_.LoadBetweenJobs(context, checkpoint, vae, [this, reactor, response, changes](absl::Status loaded) {
    if (loaded.ok()) options_.Set(changes);
    Fill(response);
    reactor->Finish(ToGrpcStatus(loaded));
  });
  return reactor;
}

}  // namespace atelier::server
