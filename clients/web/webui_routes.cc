// /sdapi/v1/*: AUTOMATIC1111's HTTP API over the daemon's gRPC API.
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway.h"
#include "webui_json.h"
#include "webui_payload.h"

namespace atelier::web {
namespace {

using nlohmann::json;

std::string B64(const std::string& bytes) { return absl::Base64Escape(bytes); }

json StructToJson(const google::protobuf::Struct& s) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(s, &text, options);
  return json::parse(text, nullptr, false);
}

// The request body as JSON, or a 422 as FastAPI answers a body it cannot read.
bool ReadBody(const httplib::Request& request, httplib::Response& response, json& body) {
  body = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    Gateway::Json(response,
                  json{{"detail", json::array({json{{"loc", json::array({"body"})},
                                                    {"msg", "the request body is not a JSON object"},
                                                    {"type", "value_error.jsondecode"}}})}},
                  422);
    return false;
  }
  return true;
}

// The AnimateDiff unit's save formats when the request enables it; empty otherwise.
std::vector<std::string> AnimateDiffFormats(const json& payload) {
  std::vector<std::string> formats;
  if (!payload.contains("alwayson_scripts") || !payload["alwayson_scripts"].is_object()) return formats;
  for (auto it = payload["alwayson_scripts"].begin(); it != payload["alwayson_scripts"].end(); ++it) {
    if (absl::AsciiStrToLower(it.key()) != "animatediff" || !it.value().is_object()) continue;
    const json& args = it.value().value("args", json::array());
    if (!args.is_array() || args.empty() || !args[0].is_object() || !args[0].value("enable", false)) continue;
    const json format = args[0].value("format", json::array({"GIF", "PNG"}));
    if (format.is_array()) {
      for (const json& f : format) {
        if (f.is_string()) formats.push_back(f.get<std::string>());
      }
    }
  }
  return formats;
}

// WebUI's "images": the results (generated images, then ControlNet's detected maps, as the plugins emit them);
// with AnimateDiff, its videos first and the frames only when "Frame" is asked for (sd-webui-animatediff's API).
json ResponseImages(const GenerationRun& run, const json& payload) {
  json images = json::array();
  const std::vector<std::string> formats = AnimateDiffFormats(payload);
  std::vector<const v1::Artifact*> videos;
  for (const v1::Artifact& a : run.artifacts) {
    if (absl::StartsWith(a.mime_type(), "video/") || a.mime_type() == "image/gif" ||
        (a.mime_type() == "image/webp" && a.plugin() == "export")) {
      videos.push_back(&a);
    }
  }
  const bool frames = std::find(formats.begin(), formats.end(), "Frame") != formats.end();
  for (const v1::Artifact* a : videos) images.push_back(B64(a->data()));
  if (videos.empty() || frames) {
    for (const v1::Result& r : run.results) images.push_back(B64(r.image().data()));
  }
  return images;
}

void Generate(Gateway& gateway, const httplib::Request& request, httplib::Response& response, bool img2img) {
  json payload;
  if (!ReadBody(request, response, payload)) return;
  if (img2img && (!payload.contains("init_images") || !payload["init_images"].is_array() ||
                  payload["init_images"].empty())) {
    Gateway::Json(response, ErrorBody("HTTPException", "Init image not found"), 404);
    return;
  }
  auto parsed = client::WebUiPayloadToRequest(payload.dump(), "request body");
  if (!parsed.ok()) {
    Gateway::Json(response, ErrorBody("ValidationError", std::string(parsed.status().message())), 422);
    return;
  }
  v1::GenerateRequest generate = *std::move(parsed);
  generate.set_mode(img2img ? v1::MODE_IMG2IMG : v1::MODE_TXT2IMG);
  // Images come back as PNG with their infotext, as WebUI encodes them (samples_format png).
  GenerationRun run = gateway.Generate(generate, request);
  // An interrupted job still answers with its last prediction and infotext, as WebUI's does.
  const bool interrupted = run.status.error_code() == grpc::StatusCode::CANCELLED && !run.results.empty();
  if (!run.status.ok() && !interrupted) {
    Gateway::Fail(response, run.status);
    return;
  }
  JobOutcome outcome;
  outcome.all_seeds.assign(run.started.all_seeds().begin(), run.started.all_seeds().end());
  outcome.all_subseeds.assign(run.started.all_subseeds().begin(), run.started.all_subseeds().end());
  for (const v1::Result& r : run.results) {
    if (!r.infotext().empty()) outcome.infotexts.push_back(r.infotext());
  }
  outcome.started_unix_ms = run.started_unix_ms;
  const json parameters = RequestParameters(payload, img2img);
  const bool send_images = !payload.contains("send_images") || payload["send_images"] != false;
  Gateway::Json(response, json{{"images", send_images ? ResponseImages(run, payload) : json::array()},
                               {"parameters", parameters},
                               {"info", InfoJson(parameters, outcome)}});
}

// Interrupt / skip the job WebUI would: the one in flight (this gateway's own first).
void Stop(Gateway& gateway, const httplib::Request& request, httplib::Response& response, bool skip) {
  std::string job = gateway.board().CurrentJob();
  if (job.empty()) {
    auto context = gateway.Context(request);
    v1::ListJobsResponse jobs;
    if (gateway.generation().ListJobs(context.get(), v1::ListJobsRequest(), &jobs).ok()) {
      for (const v1::JobInfo& j : jobs.jobs()) {
        if (j.state() == v1::JOB_STATE_RUNNING) job = j.job_id();
      }
    }
  }
  if (!job.empty()) {
    const grpc::Status status = gateway.StopJob(request, job, skip);
    if (status.ok()) {
      gateway.board().MarkInterrupted(job, skip);
    } else if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
      Gateway::Fail(response, status);
      return;
    }
  }
  // WebUI answers interrupt with {} and skip with null.
  Gateway::Json(response, skip ? json(nullptr) : json::object());
}

void ListModels(Gateway& gateway, const httplib::Request& request, httplib::Response& response, v1::ModelKind kind,
                const std::function<json(const v1::ModelFile&, const std::string& dir)>& shape) {
  v1::ListModelsRequest r;
  r.set_kind(kind);
  v1::ListModelsResponse out;
  if (!gateway.Call(request, response, &v1::Models::Stub::ListModels, gateway.models(), r, out,
                    std::chrono::seconds(120))) {
    return;
  }
  json list = json::array();
  for (const v1::ModelFile& m : out.models()) {
    if (m.kind() == kind) list.push_back(shape(m, out.models_dir()));
  }
  Gateway::Json(response, list);
}

// The schema of one item of a plugin's {"args": [item, ...]} ("$ref" into its definitions resolved); null if none.
json ArgsItemSchema(const json& schema) {
  if (!schema.is_object()) return nullptr;
  const json item = schema.value("/properties/args/items"_json_pointer, json(nullptr));
  if (!item.is_object()) return nullptr;
  const std::string ref = item.value("$ref", "");
  if (ref.rfind("#/", 0) != 0) return item;
  return schema.value(json::json_pointer(ref.substr(1)), json(nullptr));
}

std::string Stem(const std::string& filename) {
  const auto slash = filename.find_last_of('/');
  std::string name = slash == std::string::npos ? filename : filename.substr(slash + 1);
  const auto dot = name.find_last_of('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

}  // namespace

void AddWebUiRoutes(httplib::Server& server, Gateway& gateway) {
  Gateway* g = &gateway;
  server.Post("/sdapi/v1/txt2img", [g](const httplib::Request& q, httplib::Response& r) { Generate(*g, q, r, false); });
  server.Post("/sdapi/v1/img2img", [g](const httplib::Request& q, httplib::Response& r) { Generate(*g, q, r, true); });
  server.Get("/sdapi/v1/progress", [g](const httplib::Request& q, httplib::Response& r) {
    const std::string skip = q.get_param_value("skip_current_image");
    Gateway::Json(r, ProgressJson(g->board().Progress(), skip == "true" || skip == "True" || skip == "1"));
  });
  server.Post("/sdapi/v1/interrupt", [g](const httplib::Request& q, httplib::Response& r) { Stop(*g, q, r, false); });
  server.Post("/sdapi/v1/skip", [g](const httplib::Request& q, httplib::Response& r) { Stop(*g, q, r, true); });

  server.Get("/sdapi/v1/options", [g](const httplib::Request& q, httplib::Response& r) {
    v1::OptionsResponse out;
    if (!g->Call(q, r, &v1::Options::Stub::GetOptions, g->options(), v1::GetOptionsRequest(), out)) return;
    Gateway::Json(r, StructToJson(out.options()));
  });
  server.Post("/sdapi/v1/options", [g](const httplib::Request& q, httplib::Response& r) {
    json body;
    if (!ReadBody(q, r, body)) return;
    v1::SetOptionsRequest request;
    if (!google::protobuf::util::JsonStringToMessage(body.dump(), request.mutable_options()).ok()) {
      return Gateway::Json(r, ErrorBody("ValidationError", "options must be a JSON object"), 422);
    }
    v1::OptionsResponse out;  // a checkpoint change loads between jobs: a long deadline
    if (!g->Call(q, r, &v1::Options::Stub::SetOptions, g->options(), request, out, std::chrono::seconds(600))) return;
    Gateway::Json(r, nullptr);  // WebUI's set_config returns None
  });

  server.Get("/sdapi/v1/sd-models", [g](const httplib::Request& q, httplib::Response& r) {
    ListModels(*g, q, r, v1::MODEL_KIND_CHECKPOINT, [](const v1::ModelFile& m, const std::string& dir) {
      return json{{"title", m.title()},
                  {"model_name", Stem(m.filename())},
                  {"hash", m.sha256().size() >= 10 ? json(m.sha256().substr(0, 10)) : json(nullptr)},
                  {"sha256", m.sha256().empty() ? json(nullptr) : json(m.sha256())},
                  {"filename", m.shipped() || dir.empty() ? m.filename() : dir + "/" + m.filename()},
                  {"config", nullptr}};
    });
  });
  server.Get("/sdapi/v1/sd-vae", [g](const httplib::Request& q, httplib::Response& r) {
    ListModels(*g, q, r, v1::MODEL_KIND_VAE, [](const v1::ModelFile& m, const std::string& dir) {
      const auto slash = m.filename().find_last_of('/');
      return json{{"model_name", slash == std::string::npos ? m.filename() : m.filename().substr(slash + 1)},
                  {"filename", dir.empty() ? m.filename() : dir + "/" + m.filename()}};
    });
  });
  server.Get("/sdapi/v1/embeddings", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListModelsRequest request;
    request.set_kind(v1::MODEL_KIND_EMBEDDING);
    v1::ListModelsResponse out;
    if (!g->Call(q, r, &v1::Models::Stub::ListModels, g->models(), request, out, std::chrono::seconds(120))) return;
    json loaded = json::object(), skipped = json::object();
    for (const v1::ModelFile& m : out.models()) {
      if (m.kind() != v1::MODEL_KIND_EMBEDDING) continue;
      const auto meta = [&](const char* key) -> json {
        const auto it = m.metadata().find(key);
        if (it == m.metadata().end()) return nullptr;
        char* end = nullptr;
        const long value = std::strtol(it->second.c_str(), &end, 10);
        return end != nullptr && *end == '\0' ? json(value) : json(it->second);
      };
      json entry{{"step", meta("step")}, {"sd_checkpoint", meta("sd_checkpoint")},
                 {"sd_checkpoint_name", meta("sd_checkpoint_name")}, {"shape", meta("shape")},
                 {"vectors", meta("vectors")}};
      (m.error().empty() ? loaded : skipped)[m.name().empty() ? Stem(m.filename()) : m.name()] = entry;
    }
    Gateway::Json(r, json{{"loaded", loaded}, {"skipped", skipped}});
  });
  server.Post("/sdapi/v1/refresh-checkpoints", [g](const httplib::Request& q, httplib::Response& r) {
    // The daemon lists its folders afresh on every call: a listing is the refresh.
    v1::ListModelsRequest request;
    request.set_kind(v1::MODEL_KIND_CHECKPOINT);
    v1::ListModelsResponse out;
    if (!g->Call(q, r, &v1::Models::Stub::ListModels, g->models(), request, out, std::chrono::seconds(120))) return;
    Gateway::Json(r, nullptr);
  });

  server.Get("/sdapi/v1/samplers", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListSamplersResponse out;
    if (!g->Call(q, r, &v1::Generation::Stub::ListSamplers, g->generation(), v1::ListSamplersRequest(), out)) return;
    json list = json::array();
    for (const v1::SamplerDescription& s : out.samplers()) {
      json options = json::object();
      for (const auto& [key, value] : s.options()) options[key] = value;
      list.push_back(json{{"name", s.name()},
                          {"aliases", std::vector<std::string>(s.aliases().begin(), s.aliases().end())},
                          {"options", options}});
    }
    Gateway::Json(r, list);
  });
  server.Get("/sdapi/v1/schedulers", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListSchedulersResponse out;
    if (!g->Call(q, r, &v1::Generation::Stub::ListSchedulers, g->generation(), v1::ListSchedulersRequest(), out)) {
      return;
    }
    json list = json::array();
    for (const v1::SchedulerDescription& s : out.schedulers()) {
      list.push_back(json{{"name", s.name()},
                          {"label", s.label()},
                          {"aliases", s.aliases().empty()
                                          ? json(nullptr)
                                          : json(std::vector<std::string>(s.aliases().begin(), s.aliases().end()))},
                          {"default_rho", s.has_default_rho() ? s.default_rho() : -1.0},
                          {"need_inner_model", s.need_inner_model()}});
    }
    Gateway::Json(r, list);
  });
  server.Get("/sdapi/v1/upscalers", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListUpscalersResponse out;
    if (!g->Call(q, r, &v1::Generation::Stub::ListUpscalers, g->generation(), v1::ListUpscalersRequest(), out)) return;
    json list = json::array();
    for (const v1::Upscaler& u : out.upscalers()) {
      const bool file = !u.filename().empty();
      list.push_back(json{{"name", u.name()},
                          {"model_name", file ? json(Stem(u.filename())) : json(nullptr)},
                          {"model_path", file ? json(u.filename()) : json(nullptr)},
                          {"model_url", nullptr},
                          {"scale", u.name() == "None" ? json(nullptr) : json(4)}});
    }
    Gateway::Json(r, list);
  });
  server.Get("/sdapi/v1/latent-upscale-modes", [](const httplib::Request&, httplib::Response& r) {
    // The hires fix's latent upscalers the daemon takes (engine/pipeline/hires_fix.cc), WebUI's names.
    json list = json::array();
    for (const char* name : {"Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                             "Latent (nearest)", "Latent (nearest-exact)"}) {
      list.push_back(json{{"name", name}});
    }
    Gateway::Json(r, list);
  });
  server.Post("/sdapi/v1/png-info", [g](const httplib::Request& q, httplib::Response& r) {
    json body;
    if (!ReadBody(q, r, body)) return;
    std::string image = body.value("image", "");
    if (absl::StartsWith(image, "data:")) image = image.substr(std::min(image.size(), image.find(',') + 1));
    std::string bytes;
    if (image.empty() || !absl::Base64Unescape(image, &bytes)) {
      return Gateway::Json(r, ErrorBody("HTTPException", "image is not base64 of a PNG, JPEG or WebP image"), 422);
    }
    v1::ReadImageInfoRequest request;
    request.set_image(bytes);
    v1::ImageInfo out;
    if (!g->Call(q, r, &v1::Generation::Stub::ReadImageInfo, g->generation(), request, out)) return;
    json items = json::object();
    for (const auto& [key, value] : out.items()) items[key] = value;
    json parameters = StructToJson(out.parameters());
    if (!parameters.is_object()) parameters = json::object();
    Gateway::Json(r, json{{"info", out.infotext()}, {"items", items}, {"parameters", parameters}});
  });
  server.Get("/sdapi/v1/memory", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ModelsStatus out;
    if (!g->Call(q, r, &v1::Models::Stub::GetStatus, g->models(), v1::GetStatusRequest(), out)) return;
    const v1::MemoryInfo& m = out.memory();
    json ram{{"free", m.system_available_bytes()},
             {"used", m.system_total_bytes() - m.system_available_bytes()},
             {"total", m.system_total_bytes()}};
    json cuda = json{{"error", "unavailable"}};
    if (m.device_total_bytes() > 0) {
      cuda = json{{"system", json{{"free", m.device_free_bytes()},
                                  {"used", m.device_total_bytes() - m.device_free_bytes()},
                                  {"total", m.device_total_bytes()}}}};
    }
    Gateway::Json(r, json{{"ram", ram}, {"cuda", cuda}});
  });
  server.Get("/sdapi/v1/cmd-flags", [g](const httplib::Request& q, httplib::Response& r) {
    v1::DaemonInfo info;
    if (!g->Call(q, r, &v1::Daemon::Stub::GetInfo, g->daemon(), v1::GetInfoRequest(), info)) return;
    Gateway::Json(r, json{{"api", true},
                          {"nowebui", false},
                          {"api_auth", g->settings().api_auth.empty() ? json(nullptr) : json("<set>")},
                          {"device", info.device()},
                          {"threads", info.threads()},
                          {"dtype", info.compute_dtype()},
                          {"max_queue", info.limits().max_queue()},
                          {"instance_name", info.instance_name()}});
  });
  server.Get("/sdapi/v1/scripts", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListPluginsResponse out;
    if (!g->Call(q, r, &v1::Plugins::Stub::ListPlugins, g->plugins(), v1::ListPluginsRequest(), out)) return;
    json names = json::array({"x/y/z plot"});
    for (const v1::PluginInfo& p : out.plugins()) names.push_back(absl::AsciiStrToLower(p.name()));
    Gateway::Json(r, json{{"txt2img", names}, {"img2img", names}});
  });
  server.Get("/sdapi/v1/script-info", [g](const httplib::Request& q, httplib::Response& r) {
    v1::ListPluginsResponse out;
    if (!g->Call(q, r, &v1::Plugins::Stub::ListPlugins, g->plugins(), v1::ListPluginsRequest(), out)) return;
    json list = json::array();
    for (const bool img2img : {false, true}) {
      list.push_back(json{{"name", "x/y/z plot"}, {"is_alwayson", false}, {"is_img2img", img2img},
                          {"args", json::array()}});
      for (const v1::PluginInfo& p : out.plugins()) {
        // Each property of the plugin's argument schema is one arg, as WebUI lists a script's UI components.
        json args = json::array();
        const json schema = json::parse(p.params_schema_json(), nullptr, false);
        const json item = ArgsItemSchema(schema);
        if (item.is_object() && item.contains("properties") && item["properties"].is_object()) {
          for (auto it = item["properties"].begin(); it != item["properties"].end(); ++it) {
            const json& s = it.value();
            args.push_back(json{{"label", it.key()},
                                {"value", s.value("default", json(nullptr))},
                                {"minimum", s.value("minimum", json(nullptr))},
                                {"maximum", s.value("maximum", json(nullptr))},
                                {"step", s.value("multipleOf", json(nullptr))},
                                {"choices", s.value("enum", json(nullptr))}});
          }
        }
        list.push_back(json{{"name", absl::AsciiStrToLower(p.name())}, {"is_alwayson", true},
                            {"is_img2img", img2img}, {"args", args}});
      }
    }
    Gateway::Json(r, list);
  });
}

}  // namespace atelier::web
