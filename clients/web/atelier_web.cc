// atelier-web: AUTOMATIC1111's HTTP API (/sdapi/v1/*, the extensions' endpoints) and a live page, in front of an
// Atelier daemon it reaches over the public gRPC API only (so also a remote one, or several behind a balancer).
#include <openssl/crypto.h>
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "connection.h"
#include "gateway.h"
#include "version.h"
#include "webui_json.h"

namespace {

namespace web = atelier::web;
using nlohmann::json;

std::string DefaultAssets() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::canonical("/proc/self/exe", ec);
  for (const fs::path& candidate : {fs::path(ATELIER_SOURCE_ASSETS_DIR) / "web",
                                    self.parent_path().parent_path() / "share/atelier/assets/web"}) {
    if (fs::exists(candidate / "index.html", ec)) return candidate.string();
  }
  return "";
}

// WebUI's --api-auth: HTTP basic on every route (401 otherwise), compared in constant time.
bool Authorized(const httplib::Request& request, const std::vector<std::string>& credentials) {
  if (credentials.empty()) return true;
  const std::string header = request.get_header_value("Authorization");
  if (!absl::StartsWithIgnoreCase(header, "Basic ")) return false;
  std::string decoded;
  if (!absl::Base64Unescape(header.substr(6), &decoded)) return false;
  bool match = false;
  for (const std::string& pair : credentials) {
    match |= pair.size() == decoded.size() && CRYPTO_memcmp(pair.data(), decoded.data(), pair.size()) == 0;
  }
  return match;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGINT / SIGTERM stop the server from a thread that waits for them (no work in a signal handler); blocked
  // before any thread starts (gRPC's included), so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"atelier-web: AUTOMATIC1111's HTTP API and a live preview page in front of an Atelier daemon"};
  std::string listen = "127.0.0.1:7860";
  atelier::client::ConnectionOptions connection;
  connection.server = "127.0.0.1:50051";
  std::string api_auth;
  web::GatewaySettings settings;
  settings.assets_dir = DefaultAssets();
  bool no_watch_all = false;
  int threads = 64;
  app.add_option("--listen", listen, "HOST:PORT to serve HTTP on (port 0: any free port)")->capture_default_str();
  app.add_option("--daemon", connection.server, "the daemon's gRPC address(es), comma-separated (ATELIER_SERVER)")
      ->capture_default_str();
  app.add_option("--token", connection.token, "bearer token for the daemon (ATELIER_TOKEN); a caller's own "
                                              "\"Authorization: Bearer\" header is passed through instead");
  app.add_option("--tls-ca", connection.tls_ca, "PEM roots of the daemon's certificate (ATELIER_TLS_CA)");
  app.add_option("--tls-cert", connection.tls_cert, "PEM client certificate for mutual TLS (ATELIER_TLS_CERT)");
  app.add_option("--tls-key", connection.tls_key, "its key (ATELIER_TLS_KEY)");
  app.add_option("--api-auth", api_auth, "user:pass[,user:pass...]: HTTP basic auth on every route, as WebUI's");
  app.add_option("--assets", settings.assets_dir, "the page's folder (assets/web)")->capture_default_str();
  std::string cors_origins;
  app.add_option("--cors-allow-origins", cors_origins,
                 "comma-separated origins browsers may call the API from (WebUI's flag; e.g. openOutpaint's), or *");
  app.add_flag("--no-watch-all", no_watch_all, "show only the jobs submitted through this gateway on the page");
  app.add_option("--threads", threads, "HTTP worker threads (each open page holds one for its event stream)")
      ->check(CLI::Range(4, 4096))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  atelier::client::FillFromEnvironment(connection);
  settings.token = connection.token;
  connection.token.clear();  // sent per call (a caller's own token may replace it)
  settings.watch_all = !no_watch_all;
  settings.version = atelier::kAtelierVersion;
  if (!api_auth.empty()) {
    for (absl::string_view pair : absl::StrSplit(api_auth, ',', absl::SkipEmpty())) {
      if (pair.find(':') == absl::string_view::npos) {
        std::fprintf(stderr, "atelier-web: --api-auth takes user:pass pairs separated by commas\n");
        return 2;
      }
      settings.api_auth.emplace_back(pair);
    }
  }
  const auto colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    std::fprintf(stderr, "atelier-web: --listen %s is not HOST:PORT\n", listen.c_str());
    return 2;
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto channel = atelier::client::Connect(connection);
  if (!channel.ok()) {
    std::fprintf(stderr, "atelier-web: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }

  web::Gateway gateway(*channel, settings);
  httplib::Server server;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_payload_max_length(256u << 20);
  const std::vector<std::string> credentials = settings.api_auth;
  server.set_pre_routing_handler([&gateway, credentials](const httplib::Request& q, httplib::Response& r) {
    if (q.method == "OPTIONS") return httplib::Server::HandlerResponse::Unhandled;  // CORS preflights carry no auth
    if (!Authorized(q, credentials)) {
      r.set_header("WWW-Authenticate", "Basic");
      web::Gateway::Json(r, json{{"detail", "Incorrect username or password"}}, 401);
      return httplib::Server::HandlerResponse::Handled;
    }
    // The API answers 503 at once while the daemon is away (the page itself still loads and waits).
    const bool api = absl::StartsWith(q.path, "/sdapi/") || absl::StartsWith(q.path, "/controlnet/") ||
                     absl::StartsWith(q.path, "/api/");
    if (api && !gateway.daemon_reachable() && q.path != "/sdapi/v1/progress") {
      r.set_header("Retry-After", "5");
      web::Gateway::Json(r, web::ErrorBody("HTTPException", "the Atelier daemon is not reachable"), 503);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& r, std::exception_ptr e) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    web::Gateway::Json(r, web::ErrorBody("InternalError", what), 500);
  });
  server.set_error_handler([](const httplib::Request& q, httplib::Response& r) {
    if (r.status == 404 && r.body.empty()) web::Gateway::Json(r, json{{"detail", "Not Found"}}, 404);
    (void)q;
  });
  // CORS as WebUI's --cors-allow-origins: the listed origins (or any with "*") may call from a browser.
  const std::vector<std::string> origins = absl::StrSplit(cors_origins, ',', absl::SkipWhitespace());
  if (!origins.empty()) {
    server.set_post_routing_handler([origins](const httplib::Request& q, httplib::Response& r) {
      const std::string origin = q.get_header_value("Origin");
      if (origin.empty()) return;
      for (const std::string& allowed : origins) {
        if (allowed == "*" || allowed == origin) {
          r.set_header("Access-Control-Allow-Origin", allowed == "*" ? "*" : origin);
          r.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
          r.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
          r.set_header("Vary", "Origin");
          return;
        }
      }
    });
    server.Options(R"(.*)", [](const httplib::Request&, httplib::Response& r) { r.status = 204; });
  }
  web::AddWebUiRoutes(server, gateway);
  web::AddExtensionRoutes(server, gateway);
  web::AddPageRoutes(server, gateway);

  if (port == 0) {
    port = server.bind_to_any_port(host);
  } else if (!server.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    std::fprintf(stderr, "atelier-web: cannot listen on %s (address in use, or not an address of this machine)\n",
                 listen.c_str());
    return 69;
  }
  gateway.StartWatching();
  std::printf("atelier-web listening on http://%s:%d\n", host.find(':') != std::string::npos
                                                              ? absl::StrCat("[", host, "]").c_str()
                                                              : host.c_str(),
              port);
  std::fflush(stdout);
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    gateway.CancelAll();  // HTTP calls waiting on a job end now (their jobs are cancelled), so the pool can stop
    server.stop();
  });
  server.listen_after_bind();
  // Stopped by a signal (or the listener failed): wake the signal thread if it still waits.
  if (server.is_running()) server.stop();
  pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  return 0;
}
