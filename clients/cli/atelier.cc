// atelier: the command line client of atelierd.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>
#include <cstdlib>
#include <memory>
#include <string>
#include <iterator>
#include <fstream>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "atelier/v1/daemon.grpc.pb.h"
#include "atelier/v1/generation.grpc.pb.h"
#include "atelier/v1/models.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "artifact_files.h"
#include "connection.h"
#include "event_printer.h"
#include "generate_command.h"
#include "exit_codes.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "version.h"

namespace {

using namespace atelier;
using cli::ExitCodeFor;

struct Options {
  client::ConnectionOptions connection;
  double timeout_seconds = 10;
  std::shared_ptr<grpc::Channel> channel;  // made once the flags are parsed
};

std::shared_ptr<grpc::Channel> Connect(const Options& options) { return options.channel; }

void SetDeadline(grpc::ClientContext& context, const Options& options) {
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<long long>(options.timeout_seconds * 1000)));
}

// grpc::StatusCode names for messages.
std::string_view StatusCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                       "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "UNKNOWN";
}

int Fail(const Options& options, const grpc::Status& status) {
  std::string hint;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    hint = absl::StrCat(" (is atelierd running on ", options.connection.server, "? set --server or ATELIER_SERVER)");
  }
  std::fprintf(stderr, "atelier: %s: %s%s\n", StatusCodeName(status.error_code()).data(),
               status.error_message().c_str(), hint.c_str());
  return ExitCodeFor(status);
}

}  // namespace

namespace {

int Health(const Options& options, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(options, status);
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  std::printf("%s: %s\n", service.empty() ? "atelierd" : service.c_str(), name.c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? cli::kExitOk : cli::kExitNotServing;
}

int Version(const Options& options) {
  auto stub = v1::Daemon::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::DaemonInfo info;
  const grpc::Status status = stub->GetInfo(&context, v1::GetInfoRequest(), &info);
  std::printf("atelier client %s\n", kAtelierVersion);
  if (!status.ok()) return Fail(options, status);
  std::printf("atelierd %s (API %s, plugin ABI %u.%u, libtorch %s)\n", info.version().c_str(),
              info.api_version().c_str(), info.plugin_abi_major(), info.plugin_abi_minor(),
              info.torch_version().c_str());
  std::printf("device %s, %d threads, BLAS %s\n", info.device().c_str(), info.threads(), info.blas().c_str());
  if (!info.compute_dtype().empty()) {
    std::printf("compute dtype %s (%s)%s%s\n", info.compute_dtype().c_str(), info.compute_dtype_reason().c_str(),
                info.cpu_features().empty() ? "" : "; CPU features: ", info.cpu_features().c_str());
  }
  const v1::Limits& l = info.limits();
  std::printf("limits: image side <= %d, pixels <= %lld, images/job <= %d, steps <= %d, frames <= %d, prompt "
              "tokens <= %d, ControlNet units <= %d, plugin args <= %lld KiB, queue <= %d, message <= %d MiB\n",
              l.max_image_side(), static_cast<long long>(l.max_image_pixels()), l.max_images_per_job(), l.max_steps(),
              l.max_frames(), l.max_prompt_tokens(), l.max_controlnet_units(),
              static_cast<long long>(l.max_plugin_args_bytes() / 1024), l.max_queue(),
              l.max_message_bytes() / (1024 * 1024));
  const v1::DaemonStats& s = info.stats();
  std::printf("up %.0f s: %d queued, %d running; jobs %llu succeeded, %llu failed, %llu cancelled; %llu calls "
              "refused\n", s.uptime_seconds(), s.queue_depth(), s.running(),
              static_cast<unsigned long long>(s.jobs_succeeded()), static_cast<unsigned long long>(s.jobs_failed()),
              static_cast<unsigned long long>(s.jobs_cancelled()), static_cast<unsigned long long>(s.requests_refused()));
  return cli::kExitOk;
}

int Plugins(const Options& options, bool verbose) {
  auto stub = v1::Plugins::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ListPluginsResponse response;
  const grpc::Status status = stub->ListPlugins(&context, v1::ListPluginsRequest(), &response);
  if (!status.ok()) return Fail(options, status);
  std::printf("%d plugin(s) loaded, %d refused (daemon plugin ABI %u.%u)\n", response.plugins_size(),
              response.refused_size(), response.abi_major(), response.abi_minor());
  for (const auto& p : response.plugins()) {
    std::printf("  %-20s %-10s ABI %u.%u  hooks: %s  (%s)\n", p.name().c_str(), p.version().c_str(), p.abi_major(),
                p.abi_minor(), absl::StrJoin(p.hooks(), ", ").c_str(), p.file().c_str());
    if (!p.description().empty()) std::printf("      %s\n", p.description().c_str());
    if (verbose) std::printf("      parameters: %s\n", p.params_schema_json().c_str());
  }
  for (const auto& r : response.refused()) {
    std::printf("  refused %s: %s\n", r.file().c_str(), r.reason().c_str());
  }
  return cli::kExitOk;
}

int Models(const Options& options, bool hashes, const std::string& kind) {
  auto stub = v1::Models::NewStub(Connect(options));
  grpc::ClientContext context;
  if (!hashes) SetDeadline(context, options);  // hashing GB files takes as long as it takes
  v1::ListModelsRequest request;
  request.set_compute_hashes(hashes);
  if (!kind.empty()) {
    v1::ModelKind parsed;
    if (!v1::ModelKind_Parse("MODEL_KIND_" + absl::AsciiStrToUpper(absl::StrReplaceAll(kind, {{"-", "_"}})), &parsed)) {
      std::fprintf(stderr, "atelier: --kind %s: expected checkpoint, vae, embedding, controlnet, motion_module, "
                           "vae_approx, rife, lora or upscaler\n", kind.c_str());
      return cli::kExitUsage;
    }
    request.set_kind(parsed);
  }
  v1::ListModelsResponse response;
  const grpc::Status status = stub->ListModels(&context, request, &response);
  if (!status.ok()) return Fail(options, status);
  std::printf("models directory: %s\n", response.models_dir().empty() ? "(none)" : response.models_dir().c_str());
  for (const auto& m : response.models()) {
    std::string what = m.error().empty() ? m.architecture() : "unusable: " + m.error();
    if (m.shipped()) what += " (shipped with atelierd)";
    std::printf("  %-14s %-48s %9.1f MB  %s\n", v1::ModelKind_Name(m.kind()).substr(11).c_str(), m.title().c_str(),
                m.size_bytes() / 1e6, what.c_str());
    if (m.kind() == v1::MODEL_KIND_LORA) {
      // What WebUI's extra-networks card shows: the alias, the hash "Lora hashes" uses, the training metadata.
      std::string line = absl::StrCat("alias ", m.alias());
      if (!m.network_hash().empty()) absl::StrAppend(&line, ", hash ", m.network_hash().substr(0, 12));
      for (const char* key : {"ss_sd_model_name", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                              "ss_num_train_images", "ss_clip_skip"}) {
        const auto it = m.metadata().find(key);
        if (it != m.metadata().end()) absl::StrAppend(&line, ", ", key + 3, " ", it->second.substr(0, 60));
      }
      std::printf("  %14s %s\n", "", line.c_str());
    }
  }
  if (response.models().empty()) std::printf("  no model files found\n");
  return cli::kExitOk;
}

void PrintStatus(const v1::ModelsStatus& s) {
  if (s.checkpoint().empty()) {
    std::printf("checkpoint: (none loaded)\n");
  } else {
    std::printf("checkpoint: %s (%s, VAE: %s, config: %s)\n", s.checkpoint().c_str(), s.architecture().c_str(),
                s.vae().c_str(), s.config_source().c_str());
    std::printf("weights: %.1f MB %s\n", s.resident_bytes() / 1e6, s.dtype().c_str());
  }
  std::printf("device: %s (%s), %d threads\n", s.device().device().c_str(), s.device().name().c_str(),
              s.device().threads());
  std::printf("memory: process %.0f MB, system %.0f of %.0f MB available\n", s.memory().process_rss_bytes() / 1e6,
              s.memory().system_available_bytes() / 1e6, s.memory().system_total_bytes() / 1e6);
}

int Load(const Options& options, const std::string& checkpoint, const std::string& vae, bool unload) {
  auto stub = v1::Models::NewStub(Connect(options));
  grpc::ClientContext context;  // no deadline: a load waits for the running job and reads GBs
  grpc::Status status;
  v1::ModelsStatus after;
  if (unload) {
    v1::UnloadModelResponse response;
    status = stub->UnloadModel(&context, v1::UnloadModelRequest(), &response);
    after = response.status();
  } else {
    v1::LoadModelRequest request;
    request.set_checkpoint(checkpoint);
    request.set_vae(vae);
    v1::LoadModelResponse response;
    status = stub->LoadModel(&context, request, &response);
    after = response.status();
    if (status.ok()) std::printf("loaded in %.2f s\n", response.load_seconds());
  }
  if (!status.ok()) {
    const int code = Fail(options, status);
    grpc::ClientContext status_context;  // show what is serving now
    SetDeadline(status_context, options);
    if (stub->GetStatus(&status_context, v1::GetStatusRequest(), &after).ok()) PrintStatus(after);
    return code;
  }
  PrintStatus(after);
  return cli::kExitOk;
}

// `atelier convert` runs the atelier-convert tool next to this executable: it needs libtorch, which would slow
// every other command by a second if this client linked it.
int Convert(const std::string& input, const std::string& output, bool fp16) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string tool = (self.parent_path() / "atelier-convert").string();
  std::vector<std::string> args = {tool, input, output};
  if (fp16) args.push_back("--fp16");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(tool.c_str(), argv.data());
  std::fprintf(stderr, "atelier: cannot run %s: %s\n", tool.c_str(), std::strerror(errno));
  return cli::kExitError;
}

int Status(const Options& options) {
  auto stub = v1::Models::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ModelsStatus response;
  const grpc::Status status = stub->GetStatus(&context, v1::GetStatusRequest(), &response);
  if (!status.ok()) return Fail(options, status);
  PrintStatus(response);
  return cli::kExitOk;
}

// `atelier styles`: WebUI's prompt styles the daemon knows (styles.csv).
int Styles(const Options& options) {
  auto stub = v1::Models::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ListStylesResponse response;
  const grpc::Status status = stub->ListStyles(&context, v1::ListStylesRequest(), &response);
  if (!status.ok()) return Fail(options, status);
  if (response.styles().empty()) std::printf("no prompt styles (styles.csv beside the models, or --styles-file)\n");
  for (const auto& s : response.styles()) {
    std::printf("%s\n  prompt: %s\n  negative: %s\n", s.name().c_str(), s.prompt().c_str(), s.negative_prompt().c_str());
  }
  return cli::kExitOk;
}

int Jobs(const Options& options) {
  auto stub = v1::Generation::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ListJobsResponse response;
  const grpc::Status status = stub->ListJobs(&context, v1::ListJobsRequest(), &response);
  if (!status.ok()) return Fail(options, status);
  if (response.jobs().empty()) std::printf("no jobs (queue limit %d)\n", response.max_queue());
  for (const auto& j : response.jobs()) {
    const std::string where = j.position() < 0 ? "running" : absl::StrCat("#", j.position() + 1);
    std::printf("%-8s %s  %3.0f%%  client %s  streams %d  %s\n", where.c_str(), j.job_id().c_str(),
                j.progress() * 100, j.client_id().c_str(), j.streams(), j.prompt().substr(0, 60).c_str());
  }
  return cli::kExitOk;
}

int Watch(const Options& options, const std::string& job_id) {
  auto stub = v1::Generation::NewStub(Connect(options));
  grpc::ClientContext context;
  client::RouteToJob(context, job_id);
  v1::WatchRequest request;
  request.set_job_id(job_id);
  auto reader = stub->Watch(&context, request);
  cli::EventPrinter printer(stdout, isatty(STDOUT_FILENO) != 0);
  v1::GenerateEvent event;
  while (reader->Read(&event)) printer.Print(event);
  printer.Flush();
  const grpc::Status status = reader->Finish();
  return status.ok() ? cli::kExitOk : Fail(options, status);
}

// A plugin's work outside a generation (Plugins.Invoke): its progress on stderr, its files into `output_dir`, its
// JSON result on stdout.
int Invoke(const Options& options, const std::string& plugin, const std::string& method, const std::string& args,
           const std::string& output_dir, bool print_result = true) {
  auto stub = v1::Plugins::NewStub(Connect(options));
  grpc::ClientContext context;
  context.AddMetadata("atelier-client", "atelier-cli");
  v1::InvokeRequest request;
  request.set_plugin(plugin);
  request.set_method(method);
  request.set_args_json(args);
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  cli::ArtifactFiles files(output_dir);
  auto reader = stub->Invoke(&context, request);
  cli::EventPrinter printer(stderr, isatty(STDERR_FILENO) != 0);
  v1::GenerateEvent event;
  std::string result;
  int code = cli::kExitOk;
  while (reader->Read(&event)) {
    printer.Print(event);
    if (event.has_artifact()) {
      auto written = files.Add(event.artifact());
      if (!written.ok()) {
        std::fprintf(stderr, "atelier: %s\n", std::string(written.status().message()).c_str());
        code = cli::kExitError;
      } else if (written->has_value()) {
        printer.Flush();
        std::printf("%s\n", (*written)->c_str());
      }
    }
    if (event.has_finished()) result = event.finished().invoke_result_json();
  }
  printer.Flush();
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(options, status);
  if (!result.empty() && print_result) std::printf("%s\n", result.c_str());
  return code;
}

// Writes a streamed image as <dir>/<index:05>.<png|jpg|webp> and prints its path (and `infotext` when given);
// false, with a message, when it cannot be written.
bool WriteNumberedImage(const std::string& dir, int index, const v1::Image& image, const std::string& infotext,
                        cli::EventPrinter& printer) {
  const std::string& mime = image.mime_type();
  const char* ext = mime == "image/jpeg" ? "jpg" : mime == "image/webp" ? "webp" : "png";
  const std::filesystem::path path = std::filesystem::path(dir) / absl::StrFormat("%05d.%s", index, ext);
  std::ofstream out(path, std::ios::binary);
  out << image.data();
  if (!out) {
    std::fprintf(stderr, "atelier: cannot write %s\n", path.c_str());
    return false;
  }
  printer.Flush();
  std::printf("%s\n", path.c_str());
  if (!infotext.empty()) std::printf("%s\n", infotext.c_str());
  return true;
}

// `atelier interpolate --x N frames...`: RIFE on frames a user has (Plugins.Invoke rife interpolate); the frames come
// back as they are made and are written as {i:05}.png.
int Interpolate(const Options& options, const std::vector<std::string>& images, int multiplier, double scale,
                bool loop, const std::string& model, const std::string& output_dir) {
  nlohmann::json args = {{"multiplier", multiplier}, {"scale", scale}, {"loop", loop}};
  if (!model.empty()) args["model"] = model;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& path : images) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "atelier: cannot read %s\n", path.c_str());
      return cli::kExitUsage;
    }
    list.push_back(absl::Base64Escape(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>())));
  }
  args["images"] = list;
  auto stub = v1::Plugins::NewStub(Connect(options));
  grpc::ClientContext context;
  context.AddMetadata("atelier-client", "atelier-cli");
  v1::InvokeRequest request;
  request.set_plugin("rife");
  request.set_method("interpolate");
  request.set_args_json(args.dump());
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  auto reader = stub->Invoke(&context, request);
  cli::EventPrinter printer(stderr, isatty(STDERR_FILENO) != 0);
  v1::GenerateEvent event;
  int code = cli::kExitOk;
  while (reader->Read(&event)) {
    printer.Print(event);
    if (!event.has_frame()) continue;
    if (!WriteNumberedImage(output_dir, event.frame().index(), event.frame().image(), "", printer)) code = cli::kExitError;
  }
  printer.Flush();
  const grpc::Status status = reader->Finish();
  return status.ok() ? code : Fail(options, status);
}

// `atelier upscale --upscaler NAME --scale S images...`: WebUI's Extras upscale (Generation.Upscale); each result is
// written as {i:05}.<ext> with its "Postprocess ..." infotext printed.
int Upscale(const Options& options, const std::vector<std::string>& images, const std::string& upscaler,
            double scale, int width, int height, const std::string& upscaler_2, double visibility, int tile,
            const std::string& output_dir) {
  v1::UpscaleRequest request;
  for (const auto& path : images) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "atelier: cannot read %s\n", path.c_str());
      return cli::kExitUsage;
    }
    request.add_images(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
  }
  request.set_upscaler_1(upscaler);
  if (width > 0 || height > 0) {
    request.set_resize_mode(1);
    request.set_upscaling_resize_w(width);
    request.set_upscaling_resize_h(height);
  } else {
    request.set_upscaling_resize(scale);
  }
  if (!upscaler_2.empty()) {
    request.set_upscaler_2(upscaler_2);
    request.set_extras_upscaler_2_visibility(visibility);
  }
  if (tile >= 0) request.set_tile(tile);
  auto stub = v1::Generation::NewStub(Connect(options));
  grpc::ClientContext context;
  context.AddMetadata("atelier-client", "atelier-cli");
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  auto reader = stub->Upscale(&context, request);
  cli::EventPrinter printer(stderr, isatty(STDERR_FILENO) != 0);
  v1::GenerateEvent event;
  int code = cli::kExitOk;
  while (reader->Read(&event)) {
    printer.Print(event);
    if (!event.has_result()) continue;
    if (!WriteNumberedImage(output_dir, event.result().index(), event.result().image(), event.result().infotext(),
                            printer)) {
      code = cli::kExitError;
    }
  }
  printer.Flush();
  const grpc::Status status = reader->Finish();
  return status.ok() ? code : Fail(options, status);
}

// `atelier upscalers`: the names Upscale and hires fix's hr_upscaler take.
int Upscalers(const Options& options) {
  auto stub = v1::Generation::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  v1::ListUpscalersResponse response;
  const grpc::Status status = stub->ListUpscalers(&context, v1::ListUpscalersRequest(), &response);
  if (!status.ok()) return Fail(options, status);
  for (const auto& u : response.upscalers()) {
    if (!u.missing_file().empty()) {
      std::printf("  %-28s (needs models/RealESRGAN/%s: %s)\n", u.name().c_str(), u.missing_file().c_str(), u.url().c_str());
    } else {
      std::printf("  %-28s %s\n", u.name().c_str(), u.filename().empty() ? "built-in" : u.filename().c_str());
    }
  }
  return cli::kExitOk;
}

// `atelier controlnet models|modules|types|detect`: sd-webui-controlnet's endpoints through Plugins.Invoke.
int ControlNet(const Options& options, const std::string& what, const std::vector<std::string>& images,
               const std::string& module, double resolution, double a, double b, const std::string& output_dir) {
  if (what == "models") return Invoke(options, "controlnet", "model_list", "", output_dir);
  if (what == "modules") return Invoke(options, "controlnet", "module_list", "", output_dir);
  if (what == "types") return Invoke(options, "controlnet", "control_types", "", output_dir);
  if (what != "detect") {
    std::fprintf(stderr, "atelier: controlnet %s: expected models, modules, types or detect\n", what.c_str());
    return cli::kExitUsage;
  }
  nlohmann::json args = {{"controlnet_module", module}, {"controlnet_processor_res", resolution},
                         {"controlnet_threshold_a", a}, {"controlnet_threshold_b", b}};
  nlohmann::json list = nlohmann::json::array();
  for (const auto& path : images) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "atelier: cannot read %s\n", path.c_str());
      return cli::kExitUsage;
    }
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    list.push_back(absl::Base64Escape(bytes));
  }
  args["controlnet_input_images"] = list;
  // The maps arrive as files (written to output_dir, their paths printed); the JSON result would repeat them.
  return Invoke(options, "controlnet", "detect", args.dump(), output_dir, false);
}

int Cancel(const Options& options, const std::string& job_id, bool skip) {
  auto stub = v1::Generation::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  client::RouteToJob(context, job_id);
  grpc::Status status;
  if (skip) {
    v1::SkipRequest request;
    request.set_job_id(job_id);
    v1::SkipResponse response;
    status = stub->Skip(&context, request, &response);
  } else {
    v1::CancelRequest request;
    request.set_job_id(job_id);
    v1::CancelResponse response;
    status = stub->Cancel(&context, request, &response);
  }
  if (!status.ok()) return Fail(options, status);
  std::printf("%s %s\n", skip ? "skipping the current image of" : "cancelled", job_id.c_str());
  return cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"atelier: command line client of the atelierd daemon"};
  app.set_version_flag("--version", std::string(kAtelierVersion));
  app.require_subcommand(1);
  Options options;
  app.add_option("--server", options.connection.server,
                 "daemon address host:port (default: $ATELIER_SERVER or 127.0.0.1:50051); several, comma-separated, "
                 "are balanced by gRPC's round_robin");
  app.add_option("--token", options.connection.token, "bearer token for a daemon run with --auth-tokens "
                                                      "(default: $ATELIER_TOKEN)");
  app.add_option("--tls-ca", options.connection.tls_ca,
                 "PEM CA the daemon's TLS certificate chains to; connects with TLS (default: $ATELIER_TLS_CA)");
  app.add_option("--tls-cert", options.connection.tls_cert,
                 "PEM client certificate for mutual TLS (default: $ATELIER_TLS_CERT)");
  app.add_option("--tls-key", options.connection.tls_key, "its private key (default: $ATELIER_TLS_KEY)");
  app.add_option("--instance", options.connection.instance,
                 "behind a proxy of several daemons: send every call to the one run with --instance-name NAME "
                 "(watch, cancel and skip find a job's daemon from its id themselves)");
  app.add_option("--timeout", options.timeout_seconds, "seconds to wait for unary calls")->capture_default_str();

  std::string service;
  auto* health = app.add_subcommand("health", "check the daemon's health (exit 0 when SERVING, 9 when not)");
  health->add_option("--service", service, "one service, e.g. atelier.v1.Generation (default: the whole daemon)");
  auto* version = app.add_subcommand("version", "versions of the client and the daemon, device and limits");
  bool verbose = false;
  auto* plugins = app.add_subcommand("plugins", "loaded and refused plugins");
  plugins->add_flag("-v,--verbose", verbose, "also print each plugin's parameter schema");
  bool hashes = false;
  auto* models = app.add_subcommand("models", "model files the daemon found, with what each one is");
  models->add_flag("--hashes", hashes, "compute missing SHA-256 hashes (slow for GB files; cached)");
  std::string models_kind;
  models->add_option("--kind", models_kind, "only this kind: checkpoint, vae, embedding, controlnet, motion_module, "
                                            "vae_approx, rife, lora, upscaler");
  std::string checkpoint, vae = "Automatic";
  auto* load = app.add_subcommand("load", "load (or switch to) a checkpoint, between jobs");
  load->add_option("checkpoint", checkpoint, "title, filename or name, as `atelier models` shows")->required();
  load->add_option("--vae", vae, "Automatic, None or a VAE file from models/VAE")->capture_default_str();
  auto* unload = app.add_subcommand("unload", "unload the checkpoint and free its memory");
  std::string input, output;
  bool fp16 = false;
  auto* convert = app.add_subcommand("convert", "convert a .ckpt/.pt/.safetensors file to .safetensors (local, no daemon)");
  convert->add_option("input", input, "checkpoint to read (never executed)")->required()->check(CLI::ExistingFile);
  convert->add_option("output", output, "safetensors file to write")->required();
  convert->add_flag("--fp16", fp16, "store float32 weights as float16 (half the size)");
  std::string invoke_plugin, invoke_method, invoke_args, invoke_dir = "outputs/invoke";
  auto* invoke = app.add_subcommand("invoke", "run a plugin's work outside a generation (Plugins.Invoke)");
  invoke->add_option("plugin", invoke_plugin, "the plugin, e.g. controlnet")->required();
  invoke->add_option("method", invoke_method, "what it should do, e.g. detect")->required();
  invoke->add_option("args", invoke_args, "its arguments as JSON (default: none)");
  invoke->add_option("-o,--output-dir", invoke_dir, "where its files are written")->capture_default_str();
  std::string cn_what, cn_module = "canny", cn_dir = "outputs/controlnet";
  std::vector<std::string> cn_images;
  double cn_res = -1, cn_a = -1, cn_b = -1;
  auto* controlnet = app.add_subcommand("controlnet", "ControlNet: models, modules, types, or detect (run a preprocessor)");
  controlnet->add_option("what", cn_what, "models | modules | types | detect")->required();
  controlnet->add_option("images", cn_images, "detect: the images (PNG, JPEG, WebP)");
  controlnet->add_option("--module", cn_module, "detect: the preprocessor")->capture_default_str();
  controlnet->add_option("--res", cn_res, "detect: processor resolution (-1: the module's default)");
  controlnet->add_option("--threshold-a", cn_a, "detect: first slider (-1: default)");
  controlnet->add_option("--threshold-b", cn_b, "detect: second slider (-1: default)");
  controlnet->add_option("-o,--output-dir", cn_dir, "detect: where the maps are written")->capture_default_str();
  std::vector<std::string> interp_images;
  int interp_x = 2;
  double interp_scale = 1.0;
  bool interp_loop = false;
  std::string interp_model, interp_dir = "outputs/interpolated";
  std::vector<std::string> up_images;
  std::string up_name = "R-ESRGAN 4x+ Anime6B", up_second, up_dir = "upscaled";
  double up_scale = 4.0, up_visibility = 0.5;
  int up_width = 0, up_height = 0, up_tile = -1;
  auto* upscale = app.add_subcommand("upscale", "WebUI's Extras upscale of images you have (ESRGAN-family models, Lanczos)");
  upscale->add_option("images", up_images, "PNG/JPEG/WebP files")->required();
  upscale->add_option("--upscaler", up_name, "a name from `atelier upscalers`")->capture_default_str();
  upscale->add_option("--scale", up_scale, "factor, 1 to 8")->capture_default_str();
  upscale->add_option("--width", up_width, "upscale to this width (with --height) instead of by --scale");
  upscale->add_option("--height", up_height, "upscale to this height");
  upscale->add_option("--upscaler-2", up_second, "a second upscaler blended over the first");
  upscale->add_option("--visibility", up_visibility, "how much of --upscaler-2 shows, 0..1")->capture_default_str();
  upscale->add_option("--tile", up_tile, "ESRGAN_tile (default 192; 0 = untiled)");
  upscale->add_option("-o,--output-dir", up_dir, "where the results are written")->capture_default_str();
  auto* upscalers = app.add_subcommand("upscalers", "the upscaler names (hires fix's hr_upscaler, upscale --upscaler)");
  auto* interpolate = app.add_subcommand("interpolate", "RIFE frame interpolation of frames you have (PNG/JPEG/WebP)");
  interpolate->add_option("frames", interp_images, "the frames, in order")->required();
  interpolate->add_option("--x,--multiplier", interp_x, "frames per input frame: n frames -> (n-1)*x+1")->capture_default_str();
  interpolate->add_option("--scale", interp_scale, "RIFE scale: 1 (default), 0.5 for 4K")->capture_default_str();
  interpolate->add_flag("--loop", interp_loop, "also interpolate from the last frame back to the first");
  interpolate->add_option("--model", interp_model, "a file in models/RIFE (default: the first)");
  interpolate->add_option("-o,--output-dir", interp_dir, "where the frames are written")->capture_default_str();
  auto* styles = app.add_subcommand("styles", "WebUI prompt styles the daemon knows (request field: styles)");
  auto* status = app.add_subcommand("status", "loaded model, device and memory");
  auto* jobs = app.add_subcommand("jobs", "the running job and the queue");
  std::string job_id;
  auto* watch = app.add_subcommand("watch", "follow a job's progress (read-only)");
  watch->add_option("job_id", job_id, "job id")->required();
  auto* cancel = app.add_subcommand("cancel", "cancel a queued or running job");
  cancel->add_option("job_id", job_id, "job id")->required();
  auto* skip = app.add_subcommand("skip", "end a job's current image early and go on with its batch");
  skip->add_option("job_id", job_id, "job id")->required();

  cli::GenerateFlags txt2img_flags;
  auto* txt2img = app.add_subcommand("txt2img", "generate images from a prompt, with live progress");
  cli::AddGenerateFlags(txt2img, txt2img_flags);
  cli::GenerateFlags img2img_flags;
  img2img_flags.img2img = true;
  auto* img2img = app.add_subcommand("img2img", "generate from an init image (--init-image) and a prompt");
  cli::AddGenerateFlags(img2img, img2img_flags);
  std::vector<std::string> info_files;
  auto* info = app.add_subcommand("info", "print the generation parameters (infotext) stored in images (local)");
  info->add_option("files", info_files, "PNG, JPEG or WebP files")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? cli::kExitOk : cli::kExitUsage;
  }
  client::FillFromEnvironment(options.connection);
  auto channel = client::Connect(options.connection);
  if (!channel.ok()) {
    std::fprintf(stderr, "atelier: %s\n", std::string(channel.status().message()).c_str());
    return cli::kExitUsage;
  }
  options.channel = *std::move(channel);
  auto fail = [&options](const grpc::Status& status) { return Fail(options, status); };
  if (*txt2img) return cli::RunGenerate(Connect(options), txt2img_flags, fail);
  if (*img2img) return cli::RunGenerate(Connect(options), img2img_flags, fail);
  if (*info) return cli::PrintInfo(info_files);
  if (*health) return Health(options, service);
  if (*version) return Version(options);
  if (*plugins) return Plugins(options, verbose);
  if (*models) return Models(options, hashes, models_kind);
  if (*load) return Load(options, checkpoint, vae, false);
  if (*unload) return Load(options, "", "", true);
  if (*convert) return Convert(input, output, fp16);
  if (*status) return Status(options);
  if (*styles) return Styles(options);
  if (*invoke) return Invoke(options, invoke_plugin, invoke_method, invoke_args, invoke_dir);
  if (*upscale) {
    return Upscale(options, up_images, up_name, up_scale, up_width, up_height, up_second, up_visibility, up_tile, up_dir);
  }
  if (*upscalers) return Upscalers(options);
  if (*interpolate) return Interpolate(options, interp_images, interp_x, interp_scale, interp_loop, interp_model, interp_dir);
  if (*controlnet) return ControlNet(options, cn_what, cn_images, cn_module, cn_res, cn_a, cn_b, cn_dir);
  if (*jobs) return Jobs(options);
  if (*watch) return Watch(options, job_id);
  if (*cancel) return Cancel(options, job_id, false);
  if (*skip) return Cancel(options, job_id, true);
  return cli::kExitUsage;
}
