// The extensions' own endpoints: sd-webui-controlnet's /controlnet/* answered by the controlnet plugin through
// Plugins.Invoke (AnimateDiff has no endpoints of its own: its API is txt2img's alwayson_scripts).
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gateway.h"
#include "webui_json.h"

namespace atelier::web {
namespace {

using nlohmann::json;

// Runs one plugin method; the Finished event's JSON result, with images the plugin streamed as artifacts.
void Invoke(Gateway& gateway, const httplib::Request& http, httplib::Response& response, const std::string& plugin,
            const std::string& method, const json& args) {
  v1::InvokeRequest request;
  request.set_plugin(plugin);
  request.set_method(method);
  request.set_args_json(args.dump());
  auto context = gateway.Context(http, std::chrono::seconds(600));
  auto reader = gateway.plugins().Invoke(context.get(), request);
  v1::GenerateEvent event;
  std::string result_json;
  std::map<std::string, std::string> artifacts;  // name -> bytes, in name order
  while (reader->Read(&event)) {
    if (event.has_artifact()) artifacts[event.artifact().name()] += event.artifact().data();
    if (event.has_finished()) result_json = event.finished().invoke_result_json();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return Gateway::Fail(response, status);
  json result = json::parse(result_json.empty() ? "null" : result_json, nullptr, false);
  if (result.is_discarded()) result = nullptr;
  // detect: maps too large for the plugin's JSON result came as artifacts.
  if (method == "detect" && result.is_object() && !result.contains("images")) {
    json images = json::array();
    for (const auto& [name, bytes] : artifacts) {
      if (absl::StartsWith(name, "detect-")) images.push_back(absl::Base64Escape(bytes));
    }
    result["images"] = images;
  }
  Gateway::Json(response, result);
}

json QueryArgs(const httplib::Request& request) {
  json args = json::object();
  for (const auto& [key, value] : request.params) {
    if (value == "true" || value == "True") args[key] = true;
    else if (value == "false" || value == "False") args[key] = false;
    else args[key] = value;
  }
  return args;
}

}  // namespace

void AddExtensionRoutes(httplib::Server& server, Gateway& gateway) {
  Gateway* g = &gateway;
  for (const char* method : {"version", "settings", "model_list", "module_list", "control_types"}) {
    server.Get(std::string("/controlnet/") + method, [g, method](const httplib::Request& q, httplib::Response& r) {
      Invoke(*g, q, r, "controlnet", method, QueryArgs(q));
    });
  }
  server.Post("/controlnet/detect", [g](const httplib::Request& q, httplib::Response& r) {
    json body = json::parse(q.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      return Gateway::Json(r, ErrorBody("ValidationError", "the request body is not a JSON object"), 422);
    }
    Invoke(*g, q, r, "controlnet", "detect", body);
  });
}

}  // namespace atelier::web
