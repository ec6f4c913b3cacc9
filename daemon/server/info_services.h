// atelier.v1.Models, atelier.v1.Plugins and atelier.v1.Daemon: small unary services describing the daemon.
#pragma once

#include <string>

#include "atelier/v1/daemon.grpc.pb.h"
#include "atelier/v1/models.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "absl/time/time.h"
#include "engine/models/model_manager.h"
#include "engine/models/runtime.h"
#include "host/plugin_registry.h"
#include "server/job_manager.h"
#include "server/job_runner.h"
#include "server/request_limits.h"

#include <condition_variable>
#include <functional>
#include <mutex>

#include "engine/text/prompt_styles.h"

namespace atelier::server {

// What the daemon reports about itself.
struct DaemonFacts {
  std::string version;
  engine::RuntimeInfo runtime;
  engine::ComputeDtype compute_dtype;  // what --dtype resolved to, and why
  std::string cpu_features;            // engine::CpuFeatureList
  absl::Time started_at;
  int max_queue = 0;
  int max_message_bytes = 0;
  RequestLimits request_limits;  // the operator's (request_limits.h)
  std::string instance_name;     // --instance-name
  const engine::PromptStyles* styles = nullptr;  // styles.csv (null: none); outlives the server
};

class ModelsService final : public v1::Models::CallbackService {
 public:
  // Loads and unloads run on the executor between jobs (JobManager::RunExclusive), on a helper thread so no
  // gRPC thread blocks; plugins hear of a new model through their model_loaded hook.
  ModelsService(engine::ModelManager& models, JobManager& jobs, JobRunner& runner, const host::PluginRegistry& plugins,
                const DaemonFacts& facts)
      : models_(models), jobs_(jobs), runner_(runner), plugins_(plugins), facts_(facts) {}
  // Waits for load/unload helper threads still finishing.
  ~ModelsService();

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* ListStyles(grpc::CallbackServerContext* context, const v1::ListStylesRequest* request,
                                       v1::ListStylesResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context, const v1::LoadModelRequest* request,
                                      v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context, const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context, const v1::GetStatusRequest* request,
                                      v1::ModelsStatus* response) override;

  // Loads `checkpoint` with `vae` between jobs, on a helper thread, then calls `done` there with the outcome
  // (CANCELLED when the caller gave up while a job ran). LoadModel and Options.SetOptions use it.
  void LoadBetweenJobs(grpc::CallbackServerContext* context, std::string checkpoint, std::string vae,
                       std::function<void(absl::Status)> done);
  // The loaded model's status (checkpoint title, VAE, device, memory).
  void FillStatus(v1::ModelsStatus* status) const;
  // The VAE as last asked for ("Automatic", "None" or a filename; WebUI's sd_vae option), "Automatic" by default.
  std::string VaeSetting() const;

 private:
  // Runs `work` on a helper thread that the destructor waits for.
  void Detach(std::function<void()> work);

  engine::ModelManager& models_;
  JobManager& jobs_;
  JobRunner& runner_;
  const host::PluginRegistry& plugins_;
  const DaemonFacts& facts_;
  std::mutex helpers_mu_;
  std::condition_variable helpers_done_;
  int helpers_ = 0;
};

class PluginsService final : public v1::Plugins::CallbackService {
 public:
  PluginsService(const host::PluginRegistry& plugins, JobManager& jobs, const Callers& callers)
      : plugins_(plugins), jobs_(jobs), callers_(callers) {}
  grpc::ServerUnaryReactor* ListPlugins(grpc::CallbackServerContext* context, const v1::ListPluginsRequest* request,
                                        v1::ListPluginsResponse* response) override;
  // A job like a generation: queued fairly, cancellable, its events streamed (server/plugin_invoke.h).
  grpc::ServerWriteReactor<v1::GenerateEvent>* Invoke(grpc::CallbackServerContext* context,
                                                      const v1::InvokeRequest* request) override;

 private:
  const host::PluginRegistry& plugins_;
  JobManager& jobs_;
  const Callers& callers_;
};

class DaemonService final : public v1::Daemon::CallbackService {
 public:
  DaemonService(const DaemonFacts& facts, const JobManager& jobs) : facts_(facts), jobs_(jobs) {}
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context, const v1::GetInfoRequest* request,
                                    v1::DaemonInfo* response) override;

 private:
  const DaemonFacts& facts_;
  const JobManager& jobs_;
};

}  // namespace atelier::server
