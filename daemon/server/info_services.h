// atelier.v1.Models, atelier.v1.Plugins and atelier.v1.Daemon: small unary services describing the daemon.
#pragma once

#include <string>

#include "atelier/v1/daemon.grpc.pb.h"
#include "atelier/v1/models.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "absl/time/time.h"
#include "engine/model_folders.h"
#include "engine/runtime.h"
#include "host/plugin_registry.h"

namespace atelier::server {

// What the daemon reports about itself.
struct DaemonFacts {
  std::string version;
  engine::RuntimeInfo runtime;
  absl::Time started_at;
  int max_queue = 0;
  int max_message_bytes = 0;
};

class ModelsService final : public v1::Models::CallbackService {
 public:
  // `folders` may be null (no models directory).
  ModelsService(const engine::ModelFolders* folders, const DaemonFacts& facts) : folders_(folders), facts_(facts) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context, const v1::LoadModelRequest* request,
                                      v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context, const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context, const v1::GetStatusRequest* request,
                                      v1::ModelsStatus* response) override;

 private:
  void FillStatus(v1::ModelsStatus* status) const;

  const engine::ModelFolders* folders_;
  const DaemonFacts& facts_;
};

class PluginsService final : public v1::Plugins::CallbackService {
 public:
  explicit PluginsService(const host::PluginRegistry& plugins) : plugins_(plugins) {}
  grpc::ServerUnaryReactor* ListPlugins(grpc::CallbackServerContext* context, const v1::ListPluginsRequest* request,
                                        v1::ListPluginsResponse* response) override;

 private:
  const host::PluginRegistry& plugins_;
};

class DaemonService final : public v1::Daemon::CallbackService {
 public:
  explicit DaemonService(const DaemonFacts& facts) : facts_(facts) {}
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context, const v1::GetInfoRequest* request,
                                    v1::DaemonInfo* response) override;

 private:
  const DaemonFacts& facts_;
};

}  // namespace atelier::server
