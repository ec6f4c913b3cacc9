#include "server/info_services.h"

#include "engine/upscale/esrgan_net.h"

#include "atelier/plugin.h"

#include <thread>

#include "absl/time/clock.h"
#include "absl/strings/str_cat.h"
#include "server/daemon_metrics.h"
#include "server/generation_service.h"
#include "server/grpc_status.h"
#include "server/job_stream.h"
#include "server/plugin_invoke.h"
#include "util/limits.h"

namespace atelier::server {
namespace {

struct KindFolder {
  v1::ModelKind kind;
  engine::ModelFolder folder;
};
constexpr KindFolder kKinds[] = {
    {v1::MODEL_KIND_CHECKPOINT, engine::ModelFolder::kCheckpoint},
    {v1::MODEL_KIND_VAE, engine::ModelFolder::kVae},
    {v1::MODEL_KIND_EMBEDDING, engine::ModelFolder::kEmbedding},
    {v1::MODEL_KIND_CONTROLNET, engine::ModelFolder::kControlNet},
    {v1::MODEL_KIND_MOTION_MODULE, engine::ModelFolder::kMotionModule},
    {v1::MODEL_KIND_VAE_APPROX, engine::ModelFolder::kVaeApprox},
    {v1::MODEL_KIND_RIFE, engine::ModelFolder::kRife},
    {v1::MODEL_KIND_LORA, engine::ModelFolder::kLora},
    {v1::MODEL_KIND_UPSCALER, engine::ModelFolder::kEsrgan},
};

}  // namespace

ModelsService::~ModelsService() {
  std::unique_lock<std::mutex> lock(helpers_mu_);
  helpers_done_.wait(lock, [this] { return helpers_ == 0; });
}

void ModelsService::Detach(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(helpers_mu_);
    ++helpers_;
  }
  std::thread([this, work = std::move(work)] {
    work();
    std::lock_guard<std::mutex> lock(helpers_mu_);
    --helpers_;
    helpers_done_.notify_all();
  }).detach();
}

grpc::ServerUnaryReactor* ModelsService::ListModels(grpc::CallbackServerContext* context,
                                                    const v1::ListModelsRequest* request,
                                                    v1::ListModelsResponse* response) {
  if (models_.folders() == nullptr) return FinishUnary(context, grpc::Status::OK);
  response->set_models_dir(models_.folders()->root().string());
  std::optional<engine::ModelFolder> only;
  for (const KindFolder& kf : kKinds) {
    if (request->kind() == kf.kind) only = kf.folder;
  }
  if (request->kind() != v1::MODEL_KIND_UNSPECIFIED && !only) {
    return FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unknown model kind"));
  }
  // Identification reads file headers (and hashing whole files when asked): off the gRPC thread.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const bool hashes = request->compute_hashes();
  Detach([this, reactor, response, only, hashes] {
    for (engine::ModelListing& listing : models_.List(only, hashes)) {
      v1::ModelFile* file = response->add_models();
      for (const KindFolder& kf : kKinds) {
        if (kf.folder == listing.file.folder) file->set_kind(kf.kind);
      }
      file->set_name(listing.file.name);
      file->set_filename(listing.file.filename);
      file->set_title(listing.title);
      file->set_size_bytes(listing.file.size_bytes);
      file->set_sha256(listing.sha256);
      file->set_format(listing.file.format);
      file->set_architecture(listing.architecture);
      file->set_short_hash(listing.short_hash);
      file->set_shipped(listing.file.shipped);
      if (listing.file.folder == engine::ModelFolder::kEsrgan) {
        auto described = engine::DescribeUpscalerFile(models_.folders()->Resolve(engine::ModelFolder::kEsrgan,
                                                                                  listing.file.filename).value_or(""));
        if (described.ok()) {
          listing.architecture = *described;
        } else {
          listing.error = std::string(described.status().message());
        }
        file->set_architecture(listing.architecture);
      }
      file->set_error(listing.error);
      file->set_alias(listing.alias);
      file->set_network_hash(listing.network_hash);
      for (const auto& [k, v] : listing.metadata) (*file->mutable_metadata())[k] = v;
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ModelsService::LoadModel(grpc::CallbackServerContext* context,
                                                   const v1::LoadModelRequest* request,
                                                   v1::LoadModelResponse* response) {
  if (request->checkpoint().empty()) {
    return FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                             "checkpoint is required (a title, filename or name from ListModels)"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string vae = request->vae().empty() ? "Automatic" : request->vae();
  const absl::Time start = absl::Now();
  LoadBetweenJobs(context, request->checkpoint(), vae, [this, reactor, response, start](absl::Status status) {
    response->set_load_seconds(absl::ToDoubleSeconds(absl::Now() - start));
    FillStatus(response->mutable_status());
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

void ModelsService::LoadBetweenJobs(grpc::CallbackServerContext* context, std::string checkpoint, std::string vae,
                                    std::function<void(absl::Status)> done) {
  Detach([this, context, checkpoint = std::move(checkpoint), vae = std::move(vae), done = std::move(done)] {
    const absl::Status status = jobs_.RunExclusive([&]() -> absl::Status {
      // It waits for the running job: a caller that gave up meanwhile (deadline, disconnect) changes nothing later.
      if (context->IsCancelled()) return absl::CancelledError("the caller gave up before the model could be loaded");
      runner_.ReleaseModel();
      return models_.Load(checkpoint, vae).status();  // the plugins hear of it from the manager
    });
    done(status);
  });
}

grpc::ServerUnaryReactor* ModelsService::UnloadModel(grpc::CallbackServerContext* context,
                                                     const v1::UnloadModelRequest*, v1::UnloadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Detach([this, context, reactor, response] {
    const absl::Status status = jobs_.RunExclusive([&] {
      // As LoadModel: an UnloadModel whose caller gave up while a job ran does not unload when that job ends.
      if (context->IsCancelled()) return absl::CancelledError("the caller gave up before the model could be unloaded");
      runner_.ReleaseModel();
      models_.Unload();
      return absl::OkStatus();
    });
    FillStatus(response->mutable_status());
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ModelsService::ListStyles(grpc::CallbackServerContext* context, const v1::ListStylesRequest*,
                                                    v1::ListStylesResponse* response) {
  if (facts_.styles != nullptr) {
    for (const auto& s : facts_.styles->styles()) {
      v1::PromptStyle* out = response->add_styles();
      out->set_name(s.name);
      out->set_prompt(s.prompt);
      out->set_negative_prompt(s.negative_prompt);
    }
  }
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* ModelsService::GetStatus(grpc::CallbackServerContext* context, const v1::GetStatusRequest*,
                                                   v1::ModelsStatus* response) {
  FillStatus(response);
  return FinishUnary(context, grpc::Status::OK);
}

std::string ModelsService::VaeSetting() const {
  std::string vae = models_.current_vae_request();
  return vae.empty() ? "Automatic" : vae;
}

void ModelsService::FillStatus(v1::ModelsStatus* status) const {
  if (auto current = models_.current()) {
    status->set_checkpoint(current->title);
    status->set_vae(current->vae_source);
    status->set_checkpoint_sha256(current->sha256);
    status->set_architecture(current->layout.architecture);
    status->set_config_source(current->config.source);
    status->set_dtype(current->dtype == at::kHalf ? "float16" : current->dtype == at::kBFloat16 ? "bfloat16" : "float32");
    status->set_resident_bytes(current->resident_bytes);
  }
  v1::DeviceInfo* device = status->mutable_device();
  device->set_device(facts_.runtime.device);
  device->set_name(facts_.runtime.device_name);
  device->set_threads(facts_.runtime.threads);
  device->set_blas(facts_.runtime.blas);
  const engine::MemoryFigures memory = engine::ReadMemoryFigures(facts_.runtime.device);
  v1::MemoryInfo* out = status->mutable_memory();
  out->set_process_rss_bytes(memory.process_rss_bytes);
  out->set_system_total_bytes(memory.system_total_bytes);
  out->set_system_available_bytes(memory.system_available_bytes);
  out->set_device_total_bytes(memory.device_total_bytes);
  out->set_device_free_bytes(memory.device_free_bytes);
}

grpc::ServerWriteReactor<v1::GenerateEvent>* PluginsService::Invoke(grpc::CallbackServerContext* context,
                                                                    const v1::InvokeRequest* request) {
  if (!jobs_.accepting()) {
    return JobStream::Reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the daemon is shutting down"));
  }
  auto prepared = PrepareInvoke(*request, plugins_);
  if (!prepared.ok()) return JobStream::Reject(ToGrpcStatus(prepared.status()));
  // The job's request only describes it in ListJobs; the work is the prepared invoke.
  v1::GenerateRequest described;
  described.set_prompt(absl::StrCat("invoke ", (*prepared)->plugin, ".", (*prepared)->method));
  auto job = jobs_.Submit("", callers_.Of(*context), std::move(described), *std::move(prepared));
  if (!job.ok()) return JobStream::Reject(ToGrpcStatus(job.status()));
  const std::string id = (*job)->id();
  JobManager* jobs = &jobs_;
  return JobStream::Attach(*job, EventCursor{}, [jobs, id] { (void)jobs->Cancel(id, "the submitting client disconnected"); });
}

grpc::ServerUnaryReactor* PluginsService::ListPlugins(grpc::CallbackServerContext* context,
                                                      const v1::ListPluginsRequest*,
                                                      v1::ListPluginsResponse* response) {
  for (const auto& plugin : plugins_.plugins()) {
    v1::PluginInfo* info = response->add_plugins();
    info->set_name(plugin->name());
    info->set_version(plugin->version());
    info->set_description(plugin->description());
    info->set_abi_major(plugin->abi_major());
    info->set_abi_minor(plugin->abi_minor());
    info->set_file(plugin->file());
    for (const auto& hook : plugin->HookNames()) info->add_hooks(hook);
    info->set_params_schema_json(plugin->params_schema_json());
    info->set_priority(plugin->descriptor().priority);
  }
  for (const auto& refused : plugins_.refused()) {
    v1::RefusedPlugin* out = response->add_refused();
    out->set_file(refused.file);
    out->set_reason(refused.reason);
  }
  response->set_abi_major(ATELIER_PLUGIN_ABI_MAJOR);
  response->set_abi_minor(ATELIER_PLUGIN_ABI_MINOR);
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* DaemonService::GetInfo(grpc::CallbackServerContext* context, const v1::GetInfoRequest*,
                                                 v1::DaemonInfo* response) {
  response->set_version(facts_.version);
  response->set_instance_name(facts_.instance_name);
  response->set_api_version("atelier.v1");
  response->set_plugin_abi_major(ATELIER_PLUGIN_ABI_MAJOR);
  response->set_plugin_abi_minor(ATELIER_PLUGIN_ABI_MINOR);
  response->set_torch_version(facts_.runtime.torch_version);
  response->set_device(facts_.runtime.device);
  response->set_threads(facts_.runtime.threads);
  response->set_blas(facts_.runtime.blas);
  response->set_started_unix_ms(absl::ToUnixMillis(facts_.started_at));
  response->set_compute_dtype(facts_.compute_dtype.dtype);
  response->set_compute_dtype_reason(facts_.compute_dtype.reason);
  response->set_cpu_features(facts_.cpu_features);
  v1::Limits* limits = response->mutable_limits();
  const RequestLimits& operator_limits = facts_.request_limits;
  limits->set_max_image_side(operator_limits.max_image_side);
  limits->set_max_images_per_job(operator_limits.max_images_per_job);
  limits->set_max_steps(operator_limits.max_steps);
  limits->set_max_prompt_bytes(kMaxPromptBytes);
  limits->set_max_image_pixels(operator_limits.max_image_pixels);
  limits->set_max_frames(operator_limits.max_frames);
  limits->set_max_prompt_tokens(operator_limits.max_prompt_tokens);
  limits->set_max_controlnet_units(operator_limits.max_controlnet_units);
  limits->set_max_plugin_args_bytes(operator_limits.max_plugin_args_bytes);
  limits->set_max_message_bytes(facts_.max_message_bytes);
  const DaemonMetrics::Snapshot metrics = DaemonMetrics::Global().Take();
  const JobManager::Listing listing = jobs_.List();
  v1::DaemonStats* stats = response->mutable_stats();
  stats->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - facts_.started_at));
  stats->set_queue_depth(static_cast<int>(listing.queued.size()));
  stats->set_running(listing.running != nullptr ? 1 : 0);
  const auto count = [&metrics](const char* state) {
    const auto it = metrics.jobs.find(state);
    return it == metrics.jobs.end() ? std::uint64_t{0} : it->second;
  };
  stats->set_jobs_succeeded(count("succeeded"));
  stats->set_jobs_failed(count("failed"));
  stats->set_jobs_cancelled(count("cancelled"));
  std::uint64_t refused = 0;
  for (const auto& [code, n] : metrics.refused) refused += n;
  stats->set_requests_refused(refused);
  for (const auto& [stage, seconds] : metrics.stage_seconds) (*stats->mutable_stage_seconds())[stage] = seconds;
  stats->set_job_run_seconds(metrics.run_seconds.sum);
  stats->set_job_queue_seconds(metrics.queue_seconds.sum);
  const auto preview = metrics.bytes_sent.find("preview");
  stats->set_preview_bytes_sent(preview == metrics.bytes_sent.end() ? 0 : preview->second);
  stats->set_streams_open(metrics.streams_open);
  limits->set_max_queue(facts_.max_queue);
  return FinishUnary(context, grpc::Status::OK);
}

}  // namespace atelier::server
