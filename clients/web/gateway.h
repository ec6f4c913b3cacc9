// atelier-web: WebUI's HTTP API and the live page, as a client of the daemon's public gRPC API only. One Gateway
// holds the channel, the job board and the settings; the route files add the HTTP endpoints.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "atelier/v1/daemon.grpc.pb.h"
#include "atelier/v1/generation.grpc.pb.h"
#include "atelier/v1/models.grpc.pb.h"
#include "atelier/v1/options.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "job_board.h"

namespace atelier::web {

struct GatewaySettings {
  std::string assets_dir;                  // assets/web: the page
  std::vector<std::string> api_auth;       // "user:pass" pairs (WebUI's --api-auth); empty: open
  std::string token;                       // the gateway's own bearer token for the daemon
  bool watch_all = true;                   // also stream other clients' jobs to the page
  std::string version;
};

// A finished generation as the HTTP side needs it.
struct GenerationRun {
  grpc::Status status;
  std::string job_id;
  v1::Started started;
  std::int64_t started_unix_ms = 0;
  std::vector<v1::Result> results;
  std::vector<v1::Artifact> artifacts;  // whole files (chunks joined)
  std::vector<v1::Frame> frames;
};

class Gateway {
 public:
  Gateway(std::shared_ptr<grpc::Channel> channel, GatewaySettings settings);
  ~Gateway();

  // A context for one daemon call: the HTTP caller's bearer token (passed through) or the gateway's own.
  std::unique_ptr<grpc::ClientContext> Context(const httplib::Request& request,
                                               std::chrono::seconds deadline = std::chrono::seconds(30)) const;
  // Runs a generation to its end, publishing its events to the board; `on_accepted` gets the job id first.
  GenerationRun Generate(const v1::GenerateRequest& request, const httplib::Request& http,
                         const std::function<void(const std::string&)>& on_accepted = nullptr);

  // Cancel (WebUI's interrupt) or Skip one job, as the HTTP caller.
  grpc::Status StopJob(const httplib::Request& http, const std::string& job_id, bool skip);

  // Calls one unary daemon RPC as the HTTP caller, filling `reply`. On an error, answers `response` as WebUI would
  // (Fail) and returns false.
  template <typename Stub, typename Request, typename Reply>
  bool Call(const httplib::Request& http, httplib::Response& response,
            grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Reply*), Stub& stub,
            const Request& request, Reply& reply, std::chrono::seconds deadline = std::chrono::seconds(30)) const {
    auto context = Context(http, deadline);
    const grpc::Status status = (stub.*method)(context.get(), request, &reply);
    if (!status.ok()) Fail(response, status);
    return status.ok();
  }
  // Answers a daemon status as WebUI would (HTTP code and {error, detail, body, errors}).
  static void Fail(httplib::Response& response, const grpc::Status& status);
  static void Json(httplib::Response& response, const nlohmann::json& body, int code = 200);

  // Watches the daemon: reachability (for the page and 503s) and, with watch_all, other clients' jobs.
  void StartWatching();
  bool daemon_reachable() const { return reachable_.load(); }
  // Ends every generation call in flight (the daemon cancels those jobs, as for any submitter that goes away) and
  // every watch: the gateway is stopping.
  void CancelAll();
  // Runs `work` on a thread the gateway joins (finished ones as new ones start, the rest when it is destroyed).
  void Background(std::function<void()> work);

  v1::Generation::Stub& generation() { return *generation_; }
  v1::Models::Stub& models() { return *models_; }
  v1::Options::Stub& options() { return *options_; }
  v1::Plugins::Stub& plugins() { return *plugins_; }
  v1::Daemon::Stub& daemon() { return *daemon_; }
  JobBoard& board() { return board_; }
  const GatewaySettings& settings() const { return settings_; }

 private:
  void WatchLoop();
  void WatchJob(std::string job_id, std::string prompt);

  std::shared_ptr<grpc::Channel> channel_;
  GatewaySettings settings_;
  std::unique_ptr<v1::Generation::Stub> generation_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Options::Stub> options_;
  std::unique_ptr<v1::Plugins::Stub> plugins_;
  std::unique_ptr<v1::Daemon::Stub> daemon_;
  JobBoard board_;
  std::atomic<bool> reachable_{false};
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex watches_mu_;
  std::vector<Worker> workers_;
  std::vector<std::shared_ptr<grpc::ClientContext>> watch_contexts_;  // watches and generations in flight
};

// The route files.
void AddWebUiRoutes(httplib::Server& server, Gateway& gateway);      // /sdapi/v1/*
void AddExtensionRoutes(httplib::Server& server, Gateway& gateway);  // /controlnet/*, AnimateDiff
void AddPageRoutes(httplib::Server& server, Gateway& gateway);       // /, /events, /api/*

}  // namespace atelier::web
