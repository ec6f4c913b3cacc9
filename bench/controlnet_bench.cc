// ControlNet speed and memory (issue 19): one sampling step's UNet call with one ControlNet unit against the plain
// UNet call, at SD1.5 size (random weights in the real shapes), cond + uncond rows in one batch as WebUI's CFG
// denoiser sends them. The hint is encoded once (per job, as the plugin does), outside the timed step.
//   build/bench/atelier_bench --benchmark_filter=ControlNet
// Reports ratio = (ControlNet + UNet with residuals) / UNet, both timed in the same run, and peak RSS.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>

#include <ATen/ATen.h>

#include "control_model.h"
#include "control_weights.h"
#include "engine/models/unet.h"
#include "random_weights.h"

namespace atelier {
namespace {

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_ControlNetStepVsUNetStep(benchmark::State& state) {
  const int64_t size = state.range(0);  // pixels
  engine::UNetConfig unet_config;       // SD1.5
  auto unet = engine::UNet::Create(unet_config, bench::RandomWeights(engine::UNet::ParameterShapes(unet_config)));
  controlnet::ControlNetConfig cn_config;
  auto net = controlnet::ControlNetModel::Create(bench::RandomWeights(controlnet::ControlNetParameterShapes(cn_config)),
                                                 "bench", at::kCPU, at::kFloat);
  if (!unet.ok() || !net.ok()) {
    state.SkipWithError("model creation failed");
    return;
  }
  const int64_t h = size / 8;
  at::manual_seed(0);
  const at::Tensor x = at::randn({2, 4, h, h});
  const at::Tensor t = at::full({2}, 500.0);
  const at::Tensor ctx = at::randn({2, 77, 768});
  const at::Tensor hint = at::rand({1, 3, size, size});
  auto guided = (*net)->EncodeHint(hint);  // once per job
  if (!guided.ok()) {
    state.SkipWithError("hint encoding failed");
    return;
  }
  double plain = 0, controlled = 0;
  for (auto _ : state) {
    plain += Seconds([&] { benchmark::DoNotOptimize((*unet)->Forward(x, t, ctx)); });
    controlled += Seconds([&] {
      auto raw = (*net)->Forward(x, t, ctx, *guided);
      controlnet::Residuals sum;
      controlnet::AccumulateResiduals(sum, *raw, controlnet::ControlScales(1.0, false, {}), false, 1, 2);
      engine::UNetCallOptions options;
      options.residuals = &sum;
      benchmark::DoNotOptimize((*unet)->Forward(x, t, ctx, options));
    });
  }
  const double n = static_cast<double>(state.iterations());
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["unet_s"] = plain / n;
  state.counters["controlnet_step_s"] = controlled / n;
  state.counters["ratio"] = controlled / plain;
  state.counters["peak_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
  state.counters["controlnet_mb"] = static_cast<double>((*net)->parameter_bytes()) / (1 << 20);
}
BENCHMARK(BM_ControlNetStepVsUNetStep)->Arg(256)->Arg(512)->Iterations(2)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace atelier
