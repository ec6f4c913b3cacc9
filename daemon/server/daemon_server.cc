#include "server/daemon_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/daemon_metrics.h"
#include "server/generation_service.h"
#include "server/request_parse_errors.h"
#include "util/log.h"

namespace atelier::server {
namespace {

constexpr const char* kServiceNames[] = {"", "atelier.v1.Generation", "atelier.v1.Models", "atelier.v1.Plugins",
                                         "atelier.v1.Daemon", "atelier.v1.Options"};

std::string HostPart(const std::string& listen) {
  const auto colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DaemonServer>> DaemonServer::Start(const DaemonServerOptions& options,
                                                                    JobRunner& runner,
                                                                    const host::PluginRegistry& plugins,
                                                                    engine::ModelManager& models,
                                                                    DaemonFacts facts) {
  std::unique_ptr<DaemonServer> server(new DaemonServer());
  server->facts_ = std::move(facts);
  server->facts_.max_queue = options.max_queue;
  server->facts_.max_message_bytes = options.max_message_bytes;
  server->jobs_ = std::make_unique<JobManager>(
      runner, JobManagerOptions{options.max_queue, options.max_message_bytes, options.max_job_seconds, options.outputs,
                                options.instance_name});
  server->facts_.instance_name = options.instance_name;
  server->callers_ = std::make_unique<Callers>(options.security.tokens, options.client_limits);
  server->options_ = std::make_unique<DaemonOptions>();
  server->generation_ =
      std::make_unique<GenerationService>(*server->jobs_, runner, plugins, *server->callers_, *server->options_);
  server->models_ = std::make_unique<ModelsService>(models, *server->jobs_, runner, plugins, server->facts_);
  server->options_service_ = std::make_unique<OptionsService>(*server->options_, *server->models_, *server->callers_);
  server->plugins_ = std::make_unique<PluginsService>(plugins, *server->jobs_, *server->callers_);
  server->daemon_ = std::make_unique<DaemonService>(server->facts_, *server->jobs_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(options.listen,
                           options.security.credentials ? options.security.credentials
                                                        : grpc::InsecureServerCredentials(),
                           &selected_port);
  builder.RegisterService(server->generation_.get());
  builder.RegisterService(server->models_.get());
  builder.RegisterService(server->plugins_.get());
  builder.RegisterService(server->daemon_.get());
  builder.RegisterService(server->options_service_.get());
  // Images travel as bytes inside messages: raise gRPC's 4 MiB default to the configured maximum, both ways.
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // A request that cannot be parsed gets INVALID_ARGUMENT with the reason instead of gRPC's empty UNIMPLEMENTED.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RequestParseErrorInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  grpc::ResourceQuota quota("atelierd");
  if (options.grpc_memory_bytes > 0) quota.Resize(static_cast<size_t>(options.grpc_memory_bytes));
  builder.SetResourceQuota(quota);
  // Long-lived streams through NATs: ping idle connections, and accept client pings every 20 s or slower.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 20 * 1000);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || selected_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, " (address in use, or not an address of this machine)"));
  }
  server->port_ = selected_port;
  server->host_ = HostPart(options.listen);
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  for (const char* name : kServiceNames) health->SetServingStatus(name, true);
  server->jobs_->Start();
  return server;
}

DaemonServer::~DaemonServer() { Shutdown(); }

std::string DaemonServer::address() const { return absl::StrCat(host_, ":", port_); }

std::string DaemonServer::MetricsText() const {
  LiveGauges live;
  live.uptime_seconds = absl::ToDoubleSeconds(absl::Now() - facts_.started_at);
  const JobManager::Listing listing = jobs_->List();
  live.queue_depth = static_cast<int>(listing.queued.size());
  live.running = listing.running != nullptr ? 1 : 0;
  const engine::MemoryFigures memory = engine::ReadMemoryFigures(facts_.runtime.device);
  live.process_rss_bytes = memory.process_rss_bytes;
  live.system_available_bytes = memory.system_available_bytes;
  live.device_total_bytes = memory.device_total_bytes;
  live.device_free_bytes = memory.device_free_bytes;
  return RenderPrometheus(DaemonMetrics::Global().Take(), live);
}

void DaemonServer::Drain() {
  if (drained_ || server_ == nullptr) return;
  drained_ = true;
  // Health first, so load balancers stop sending work while jobs drain; it stays NOT_SERVING for good.
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  jobs_->Shutdown();
}

void DaemonServer::AbandonForRestart(const absl::Status& running_status, const std::string& queued_reason) {
  if (auto* health = server_ != nullptr ? server_->GetHealthCheckService() : nullptr) health->Shutdown();
  jobs_->AbandonForRestart(running_status, queued_reason);
}

void DaemonServer::Stop(absl::Duration grace) {
  if (stopped_ || server_ == nullptr) return;
  stopped_ = true;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

void DaemonServer::Shutdown(absl::Duration grace) {
  Drain();
  Stop(grace);
}

}  // namespace atelier::server
