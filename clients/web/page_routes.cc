// The live page: static files from assets/web, the job board as server-sent events (/events), and a small JSON API
// the page uses to submit, cancel and skip jobs without blocking (/api/*).
#include <future>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "gateway.h"
#include "webui_json.h"
#include "webui_payload.h"

namespace atelier::web {
namespace {

using nlohmann::json;

constexpr int kKeepAliveMs = 15000;

bool ReadObject(const httplib::Request& request, httplib::Response& response, json& body) {
  body = json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    Gateway::Json(response, ErrorBody("ValidationError", "the request body is not a JSON object"), 422);
    return false;
  }
  return true;
}

// POST /api/submit {"payload": {WebUI txt2img/img2img fields}, "img2img": bool} -> {"job_id"} once the daemon took
// the job; its events reach every page through /events.
void Submit(Gateway& gateway, const httplib::Request& request, httplib::Response& response) {
  json body;
  if (!ReadObject(request, response, body)) return;
  const json payload = body.value("payload", json::object());
  auto parsed = client::WebUiPayloadToRequest(payload.dump(), "payload");
  if (!parsed.ok()) return Gateway::Json(response, ErrorBody("ValidationError", std::string(parsed.status().message())), 422);
  v1::GenerateRequest generate = *std::move(parsed);
  generate.set_mode(body.value("img2img", false) ? v1::MODE_IMG2IMG : v1::MODE_TXT2IMG);
  auto accepted = std::make_shared<std::promise<std::pair<std::string, grpc::Status>>>();
  auto once = std::make_shared<std::once_flag>();
  httplib::Request http = request;  // the caller's headers (token), kept for the job's thread
  http.body.clear();
  gateway.Background([&gateway, generate, http, accepted, once] {
    GenerationRun run = gateway.Generate(generate, http, [&](const std::string& id) {
      std::call_once(*once, [&] { accepted->set_value({id, grpc::Status::OK}); });
    });
    std::call_once(*once, [&] { accepted->set_value({run.job_id, run.status}); });
  });
  const auto [id, status] = accepted->get_future().get();
  if (id.empty()) return Gateway::Fail(response, status.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "no job") : status);
  Gateway::Json(response, json{{"job_id", id}});
}

void Control(Gateway& gateway, const httplib::Request& request, httplib::Response& response, bool skip) {
  json body;
  if (!ReadObject(request, response, body)) return;
  const std::string id = body.value("job_id", "");
  const grpc::Status status = gateway.StopJob(request, id, skip);
  if (!status.ok()) return Gateway::Fail(response, status);
  Gateway::Json(response, json{{"job_id", id}});
}

}  // namespace

void AddPageRoutes(httplib::Server& server, Gateway& gateway) {
  Gateway* g = &gateway;
  if (!gateway.settings().assets_dir.empty()) server.set_mount_point("/", gateway.settings().assets_dir);

  server.Get("/events", [g](const httplib::Request&, httplib::Response& r) {
    auto subscription = g->board().Subscribe();
    r.set_header("Cache-Control", "no-cache");
    r.set_header("X-Accel-Buffering", "no");  // nginx in front: do not buffer the stream
    auto first = std::make_shared<bool>(true);
    r.set_chunked_content_provider(
        "text/event-stream",
        [subscription, first](size_t, httplib::DataSink& sink) {
          std::string message;
          if (*first) {
            message = "retry: 1000\n\n";  // the browser reconnects after a second when the gateway went away
            *first = false;
          }
          message += subscription->Next(kKeepAliveMs);
          if (message.empty()) message = ": keep-alive\n\n";
          return sink.write(message.data(), message.size());
        },
        [g, subscription](bool) { g->board().Unsubscribe(subscription); });
  });

  server.Post("/api/submit", [g](const httplib::Request& q, httplib::Response& r) { Submit(*g, q, r); });
  server.Post("/api/cancel", [g](const httplib::Request& q, httplib::Response& r) { Control(*g, q, r, false); });
  server.Post("/api/skip", [g](const httplib::Request& q, httplib::Response& r) { Control(*g, q, r, true); });

  server.Get("/api/jobs", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListJobsResponse out;
    if (!g->Call(q, r, &v1::Generation::Stub::ListJobs, g->generation(), v1::ListJobsRequest(), out)) return;
    json jobs = json::array();
    for (const v1::JobInfo& j : out.jobs()) {
      jobs.push_back(json{{"job_id", j.job_id()}, {"client_id", j.client_id()}, {"state", JobStateName(j.state())},
                          {"position", j.position()}, {"progress", j.progress()}, {"prompt", j.prompt()}});
    }
    Gateway::Json(r, json{{"jobs", jobs}, {"max_queue", out.max_queue()}});
  });
  server.Get("/api/plugins", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListPluginsResponse out;
    if (!g->Call(q, r, &v1::Plugins::Stub::ListPlugins, g->plugins(), v1::ListPluginsRequest(), out)) return;
    json plugins = json::array();
    for (const v1::PluginInfo& p : out.plugins()) {
      json schema = json::parse(p.params_schema_json().empty() ? "null" : p.params_schema_json(), nullptr, false);
      plugins.push_back(json{{"name", p.name()}, {"description", p.description()},
                             {"schema", schema.is_discarded() ? json(nullptr) : schema}});
    }
    Gateway::Json(r, json{{"plugins", plugins}});
  });
  server.Get("/api/status", [g](const httplib::Request& q, httplib::Response& r) {
    v1::DaemonInfo info;
    if (!g->Call(q, r, &v1::Daemon::Stub::GetInfo, g->daemon(), v1::GetInfoRequest(), info, std::chrono::seconds(3))) {
      return;
    }
    Gateway::Json(r, json{{"version", info.version()}, {"device", info.device()}, {"instance", info.instance_name()},
                          {"gateway_version", g->settings().version}});
  });
}

}  // namespace atelier::web
