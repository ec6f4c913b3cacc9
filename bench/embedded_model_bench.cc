// The embedded model's speed (issue 18: a 64x64, 20-step image in at most 1 s on a 2-core machine): engine::Generate
// of WebUI's defaults (Euler a, 20 steps, CFG 7, one image) at the checkpoint's native 64x64, on the trained embedded
// model (assets/models/Stable-diffusion/atelier-shapes) and, alternately in the same process, on the previous random
// tiny checkpoint (the fixtures' tiny-sd with tests/data/tiny-sd.yaml). Counters: ms per image, and
// ratio_vs_random_tiny on the embedded model's row.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "engine/io/model_folders.h"
#include "engine/models/model_manager.h"
#include "engine/models/runtime.h"
#include "engine/pipeline/generate.h"
#include "engine/sampling/sampler_table.h"
#include "engine/text/clip_tokenizer.h"

namespace {

namespace fs = std::filesystem;
namespace engine = atelier::engine;
using Clock = std::chrono::steady_clock;

struct Model {
  std::unique_ptr<engine::ModelFolders> folders;
  std::unique_ptr<engine::ModelManager> manager;
  std::unique_ptr<engine::Sd1Pipeline> pipeline;
};

engine::ClipTokenizer* Tokenizer() {
  static auto* tokenizer = engine::ClipTokenizer::Load(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip")->release();
  return tokenizer;
}

// "embedded": assets/models; "random": the fixtures' tiny-sd installed in a temporary models folder.
Model* Get(const std::string& which) {
  static std::map<std::string, Model*> models;
  if (auto it = models.find(which); it != models.end()) return it->second;
  (void)engine::InitRuntime({"cpu", 0});
  fs::path root = fs::path(ATELIER_SOURCE_DIR) / "assets" / "models";
  std::string name = "atelier-shapes";
  if (which == "random") {
    const char* env = std::getenv("ATELIER_FIXTURES");
    const fs::path fixtures = env != nullptr ? fs::path(env) : fs::path(ATELIER_SOURCE_DIR) / ".." / "shared" / "fixtures";
    root = fs::temp_directory_path() / "atelier-bench-random-tiny";
    fs::create_directories(root / "Stable-diffusion");
    fs::copy_file(fixtures / "tiny-sd" / "weights.safetensors", root / "Stable-diffusion" / "tiny.safetensors",
                  fs::copy_options::overwrite_existing);
    fs::copy_file(fs::path(ATELIER_SOURCE_DIR) / "tests" / "data" / "tiny-sd.yaml",
                  root / "Stable-diffusion" / "tiny.yaml", fs::copy_options::overwrite_existing);
    name = "tiny";
  }
  auto m = new Model;
  auto folders = engine::ModelFolders::Open(root);
  if (!folders.ok()) return models[which] = nullptr;
  m->folders = std::make_unique<engine::ModelFolders>(*std::move(folders));
  m->manager = std::make_unique<engine::ModelManager>(m->folders.get(), "", engine::LoadOptions());
  auto weights = m->manager->Load(name, "None");
  if (!weights.ok()) return models[which] = nullptr;
  m->pipeline = *engine::Sd1Pipeline::Create(*weights, *Tokenizer(), nullptr);
  return models[which] = m;
}

double MsPerImage(Model* m, int iterations) {
  engine::GenerationParams params;
  params.prompt = "a small red circle on the left, blue background";
  params.width = params.height = 64;
  params.seed = 1;
  params.sampling.choice = *engine::ResolveSampler("Euler a", "Automatic");
  params.sampling.steps = 20;
  params.sampling.cfg_scale = 7.0;
  const auto t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    params.seed = 1 + i;
    if (!engine::Generate(*m->pipeline, params).ok()) return -1;
  }
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / iterations;
}

void BM_EmbeddedModel64x64(benchmark::State& state) {
  Model* trained = Get("embedded");
  Model* random = Get("random");
  if (trained == nullptr || random == nullptr) {
    state.SkipWithError("cannot load the embedded model or the fixtures' tiny-sd (set ATELIER_FIXTURES)");
    return;
  }
  (void)MsPerImage(trained, 1);  // warm-up: first-call allocations and kernel set-up
  (void)MsPerImage(random, 1);
  double trained_ms = 0, random_ms = 0;
  int n = 0;
  for (auto _ : state) {
    trained_ms += MsPerImage(trained, 1);
    random_ms += MsPerImage(random, 1);
    ++n;
  }
  state.counters["embedded_ms"] = trained_ms / n;
  state.counters["random_tiny_ms"] = random_ms / n;
  state.counters["ratio_vs_random_tiny"] = trained_ms / random_ms;
}
BENCHMARK(BM_EmbeddedModel64x64)->Unit(benchmark::kMillisecond)->Iterations(10);

}  // namespace
