// The daemon's cost around the engine: one txt2img job run by engine::Generate in-process (the baseline) and the
// same job submitted over gRPC on loopback to a real DaemonServer + GenerationRunner (queueing, per-step progress
// events, previews rendered and encoded, the result encoded as PNG with its infotext, streaming to the client),
// alternately in the same process on the embedded tiny model (assets/models), 128x128 and 256x256, 10 steps, Euler.
// Counters: direct_ms, served_ms and overhead_ratio = served / direct - 1, per preview method (none, approx-cheap,
// full VAE; JPEG previews every step).
#include <benchmark/benchmark.h>

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include "atelier/v1/generation.grpc.pb.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/io/model_folders.h"
#include "engine/models/model_manager.h"
#include "engine/models/runtime.h"
#include "engine/sampling/sampler_table.h"
#include "engine/pipeline/generate.h"
#include "engine/pipeline/generation_infotext.h"
#include "host/plugin_registry.h"
#include "server/daemon_server.h"
#include "server/generation_runner.h"

namespace {

namespace fs = std::filesystem;
namespace engine = atelier::engine;
namespace server = atelier::server;
namespace v1 = atelier::v1;
using Clock = std::chrono::steady_clock;

struct Daemon {
  std::unique_ptr<engine::ModelFolders> folders;
  std::unique_ptr<engine::ModelManager> models;
  std::unique_ptr<engine::ClipTokenizer> tokenizer;
  std::unique_ptr<atelier::host::PluginRegistry> plugins;
  std::unique_ptr<server::GenerationRunner> runner;
  std::unique_ptr<server::DaemonServer> server;
  std::unique_ptr<v1::Generation::Stub> stub;
  std::unique_ptr<engine::Sd1Pipeline> pipeline;  // the baseline's own
};

Daemon* Get() {
  static Daemon* daemon = [] {
    (void)engine::InitRuntime({"cpu", 0});
    auto d = new Daemon;
    const fs::path assets = fs::path(ATELIER_SOURCE_DIR) / "assets";
    d->folders = std::make_unique<engine::ModelFolders>(*engine::ModelFolders::Open(assets / "models"));
    d->models = std::make_unique<engine::ModelManager>(d->folders.get(), "", engine::LoadOptions());
    auto weights = d->models->Load("atelier-shapes", "None");
    if (!weights.ok()) return static_cast<Daemon*>(nullptr);
    d->tokenizer = *engine::ClipTokenizer::Load(assets / "clip");
    d->pipeline = *engine::Sd1Pipeline::Create(*weights, *d->tokenizer, nullptr);
    const fs::path no_plugins = fs::temp_directory_path() / "atelier-bench-no-plugins";
    fs::create_directories(no_plugins);
    d->plugins = atelier::host::PluginRegistry::LoadDirectory(no_plugins, {});
    d->runner = std::make_unique<server::GenerationRunner>(*d->models, *d->plugins, *d->tokenizer);
    server::DaemonServerOptions options;
    options.listen = "127.0.0.1:0";
    server::DaemonFacts facts;
    facts.started_at = absl::Now();
    auto started = server::DaemonServer::Start(options, *d->runner, *d->plugins, *d->models, facts);
    if (!started.ok()) return static_cast<Daemon*>(nullptr);
    d->server = *std::move(started);
    d->stub = v1::Generation::NewStub(grpc::CreateChannel(d->server->address(), grpc::InsecureChannelCredentials()));
    return d;
  }();
  return daemon;
}

constexpr int kSteps = 10;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

void BM_ServedVsDirect(benchmark::State& state) {
  Daemon* d = Get();
  if (d == nullptr) {
    state.SkipWithError("cannot start the daemon on the embedded model");
    return;
  }
  const int px = static_cast<int>(state.range(0));
  const auto method = static_cast<v1::PreviewMethod>(state.range(1));
  engine::GenerationParams params;
  params.prompt = "a red circle";
  params.width = params.height = px;
  params.seed = 1;
  params.sampling.choice = *engine::ResolveSampler("Euler", "Automatic");
  params.sampling.steps = kSteps;
  params.noise_source = engine::NoiseSource::kCpu;
  v1::GenerateRequest request;
  request.set_prompt(params.prompt);
  request.set_width(px);
  request.set_height(px);
  request.set_seed(1);
  request.set_steps(kSteps);
  request.set_sampler_name("Euler");
  (*request.mutable_override_settings()->mutable_fields())["randn_source"].set_string_value("CPU");
  request.mutable_preview()->set_method(method);
  request.mutable_preview()->set_format(v1::IMAGE_FORMAT_JPEG);

  // Warm-up outside the timing: the runner builds its pipeline for the model on its first job.
  {
    grpc::ClientContext context;
    auto reader = d->stub->Generate(&context, request);
    v1::GenerateEvent event;
    while (reader->Read(&event)) {
    }
    (void)reader->Finish();
  }
  double direct = 0, served = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto generated = engine::Generate(*d->pipeline, params);
    direct += Seconds(t0);
    if (!generated.ok()) {
      state.SkipWithError(std::string(generated.status().message()).c_str());
      return;
    }
    t0 = Clock::now();
    grpc::ClientContext context;
    auto reader = d->stub->Generate(&context, request);
    v1::GenerateEvent event;
    int results = 0;
    while (reader->Read(&event)) results += event.has_result();
    const grpc::Status status = reader->Finish();
    served += Seconds(t0);
    if (!status.ok() || results != 1) {
      state.SkipWithError(status.ok() ? "no result" : status.error_message().c_str());
      return;
    }
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["direct_ms"] = 1e3 * direct / n;
  state.counters["served_ms"] = 1e3 * served / n;
  state.counters["overhead_ratio"] = served / direct - 1.0;
}
BENCHMARK(BM_ServedVsDirect)
    ->ArgsProduct({{128, 256}, {v1::PREVIEW_METHOD_NONE, v1::PREVIEW_METHOD_APPROX_CHEAP, v1::PREVIEW_METHOD_FULL}})
    ->ArgNames({"px", "preview"})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(8);

}  // namespace
