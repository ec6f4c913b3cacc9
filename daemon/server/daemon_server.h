// The gRPC server: every service, health, reflection, message limits, and the graceful shutdown sequence.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/models/model_manager.h"
#include "host/plugin_registry.h"
#include "server/info_services.h"
#include "server/job_manager.h"
#include "server/job_runner.h"

#include "server/outputs_saver.h"
#include "server/caller.h"
#include "server/daemon_options.h"
#include "server/options_service.h"
#include "server/server_security.h"

namespace atelier::server {

struct DaemonServerOptions {
  // host:port; port 0 picks a free port (see port()).
  std::string listen = "127.0.0.1:50051";
  int max_queue = 64;
  int max_message_bytes = 64 * 1024 * 1024;
  double max_job_seconds = 0;  // see JobManagerOptions
  OutputsSaver* outputs = nullptr;  // see JobManagerOptions
  // How the port is secured (BuildServerSecurity); null credentials: plain text, no tokens.
  ServerSecurity security;
  // Every client's limits unless its token sets its own (client_quotas.h).
  ClientLimits client_limits;
  // gRPC's own bounds, so memory stays bounded whatever clients do: streams open at once on one connection, and
  // the memory gRPC may use for its buffers (ResourceQuota; 0: gRPC's default).
  std::string instance_name;  // see JobManagerOptions
  int max_concurrent_streams = 256;
  std::int64_t grpc_memory_bytes = std::int64_t{1} << 30;
};

class GenerationService;

class DaemonServer {
 public:
  // Builds and starts the server and the executor. `runner`, `plugins` and `models` must outlive it.
  static absl::StatusOr<std::unique_ptr<DaemonServer>> Start(const DaemonServerOptions& options, JobRunner& runner,
                                                             const host::PluginRegistry& plugins,
                                                             engine::ModelManager& models, DaemonFacts facts);
  ~DaemonServer();

  int port() const { return port_; }
  // "127.0.0.1:PORT" with the real port.
  std::string address() const;
  JobManager& jobs() { return *jobs_; }
  // The Prometheus text exposition of the daemon's metrics (daemon_metrics.h) with live gauges. Thread-safe.
  std::string MetricsText() const;

  // Shutdown, first half: health goes NOT_SERVING, new jobs get UNAVAILABLE, queued jobs end with UNAVAILABLE, the
  // running job stops at its next step boundary; returns when the executor is idle. RPCs are still served, so
  // every stream delivers its last events and final status.
  void Drain();
  // Shutdown, second half: stops the gRPC server, giving open streams `grace` to finish, then cancelling them.
  void Stop(absl::Duration grace = absl::Seconds(5));
  // The executor is stuck in a plugin: health goes NOT_SERVING, the running job fails with `running_status`, queued
  // jobs end UNAVAILABLE so clients retry them after the restart. The caller then exits the process.
  void AbandonForRestart(const absl::Status& running_status, const std::string& queued_reason);
  // Drain() then Stop(). Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  DaemonServer() = default;

  DaemonFacts facts_;
  std::unique_ptr<Callers> callers_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<DaemonOptions> options_;  // read by generation_ and options_service_, so it outlives them
  std::unique_ptr<GenerationService> generation_;
  std::unique_ptr<ModelsService> models_;
  std::unique_ptr<PluginsService> plugins_;
  std::unique_ptr<DaemonService> daemon_;
  std::unique_ptr<OptionsService> options_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string host_;
  int port_ = 0;
  bool drained_ = false;
  bool stopped_ = false;
};

}  // namespace atelier::server
