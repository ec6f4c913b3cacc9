// The full-size SD 1.x CLIP text encoder (ViT-L/14 text tower, random weights) encoding one chunk for a prompt
// and its negative ([2, 77]), as every generation does once per distinct prompt. GFLOP/s counts the matmul work
// (2 x parameters x tokens); compare with BM_Matmul in blas_bench.cc, run in the same process.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>

#include "engine/models/clip_text_model.h"
#include "engine/models/runtime.h"

namespace {

void BM_ClipTextEncodeChunk(benchmark::State& state) {
  (void)atelier::engine::InitRuntime({"cpu", 0});
  const atelier::engine::ClipTextConfig config;
  atelier::engine::WeightMap weights;
  double parameters = 0;
  for (const auto& [name, shape] : atelier::engine::ClipTextModel::ParameterShapes(config)) {
    if (name.find("position_ids") != std::string::npos) continue;
    weights[name] = at::randn(shape) * 0.02;
    if (name.find("embedding") == std::string::npos) parameters += static_cast<double>(weights[name].numel());
  }
  auto model = atelier::engine::ClipTextModel::Create(config, weights);
  if (!model.ok()) {
    state.SkipWithError(std::string(model.status().message()).c_str());
    return;
  }
  const at::Tensor ids = at::randint(0, 49408, {2, 77}, at::kLong);
  for (auto _ : state) benchmark::DoNotOptimize((*model)->Encode(ids, 1));
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * parameters * 2 * 77 / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ClipTextEncodeChunk)->Unit(benchmark::kMillisecond);

}  // namespace
