// The image models at full SD1.5 size with random weights (scaled 1/sqrt(fan_in) so activations stay finite):
// one UNet step for cond+uncond (batch 2) at 256x256 and 512x512, a VAE decode and a TAESD decode at 512x512.
// Counters: seconds per call, achieved GFLOP/s (FLOP counts of ../shared/docs/perf-baseline.md for the UNet and
// VAE, counted from the layers here for TAESD), that figure as a fraction of the fp32 GEMM peak measured at the
// start of the same process, and the process's peak RSS (run one benchmark per process for a clean figure:
// --benchmark_filter=UNetStep/512).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include "engine/models/runtime.h"
#include "random_weights.h"
#include "engine/models/taesd.h"
#include "engine/models/unet.h"
#include "engine/models/vae.h"

namespace {

using atelier::bench::RandomWeights;
using atelier::engine::WeightMap;

void InitOnce() {
  static const bool done = [] {
    (void)atelier::engine::InitRuntime({"cpu", 0});
    return true;
  }();
  (void)done;
}

// fp32 GEMM peak of this machine, measured once: the best of 16 2048^3 matmuls.
double GemmPeakGflops() {
  static const double peak = [] {
    InitOnce();
    const int64_t n = 2048;
    const at::Tensor a = at::rand({n, n}), b = at::rand({n, n});
    double best = 0;
    for (int i = 0; i < 16; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const at::Tensor c = at::mm(a, b);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 2.0 * n * n * n / s / 1e9);
    }
    std::fprintf(stderr, "fp32 GEMM peak (2048^3 matmul, best of 16): %.1f GFLOP/s\n", best);
    return best;
  }();
  return peak;
}

double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Counters from wall-clock seconds per call (the work is multi-threaded; CPU time of the main thread means little).
void Report(benchmark::State& state, double gflop, double total_seconds) {
  const double per_call = total_seconds / static_cast<double>(state.iterations());
  state.counters["s/call"] = per_call;
  state.counters["GFLOP/s"] = gflop / per_call;
  state.counters["gemm_peak_GFLOP/s"] = GemmPeakGflops();
  state.counters["of_peak"] = gflop / per_call / GemmPeakGflops();
  state.counters["peak_RSS_MiB"] = PeakRssMiB();
}

// Times `call` once per benchmark iteration (wall clock) and reports the counters; an error skips the benchmark.
void TimeCalls(benchmark::State& state, double gflop, const std::function<absl::StatusOr<at::Tensor>()>& call) {
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto result = call();
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!result.ok()) {
      state.SkipWithError(std::string(result.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(result->data_ptr());
  }
  Report(state, gflop, total);
}

void BM_UNetStep(benchmark::State& state) {
  InitOnce();
  (void)GemmPeakGflops();
  const int64_t size = state.range(0);
  const atelier::engine::UNetConfig config;
  static std::unique_ptr<atelier::engine::UNet> unet;
  if (unet == nullptr) {
    auto created = atelier::engine::UNet::Create(config, RandomWeights(atelier::engine::UNet::ParameterShapes(config)));
    if (!created.ok()) {
      state.SkipWithError(std::string(created.status().message()).c_str());
      return;
    }
    unet = *std::move(created);
  }
  const at::Tensor x = at::randn({2, 4, size / 8, size / 8});
  const at::Tensor t = at::full({2}, 999.0);
  const at::Tensor context = at::randn({2, 77, 768});
  const double gflop = size == 512 ? 1606 : size == 256 ? 360 : 1606.0 * (size * size) / (512.0 * 512.0);
  TimeCalls(state, gflop, [&] { return unet->Forward(x, t, context); });
}
BENCHMARK(BM_UNetStep)->Arg(256)->Arg(512)->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();

void BM_VaeDecode(benchmark::State& state) {
  InitOnce();
  (void)GemmPeakGflops();
  const int64_t size = state.range(0);
  const atelier::engine::VaeConfig config;
  auto vae = atelier::engine::Vae::Create(config, RandomWeights(atelier::engine::Vae::ParameterShapes(config)));
  if (!vae.ok()) {
    state.SkipWithError(std::string(vae.status().message()).c_str());
    return;
  }
  const at::Tensor latent = at::randn({1, 4, size / 8, size / 8});
  const double gflop = 2515.0 * (size * size) / (512.0 * 512.0);
  TimeCalls(state, gflop, [&] { return (*vae)->Decode(latent); });
}
BENCHMARK(BM_VaeDecode)->Arg(512)->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();

// TAESD decoder FLOP: 3x3 convs (2 * 9 * in * out per output pixel) at latent size h x w: conv 4->64 and 3 Blocks
// (9 convs 64->64); at 2x: conv + 3 Blocks (10); at 4x: 10; at 8x: conv + Block (4) + conv 64->3.
double TaesdDecodeGflop(int64_t h, int64_t w) {
  const double c = 2.0 * 9 * 64 * 64, px = static_cast<double>(h * w);
  const double flop = px * (2.0 * 9 * 4 * 64 + 9 * c) + 4 * px * 10 * c + 16 * px * 10 * c + 64 * px * (4 * c + 2.0 * 9 * 64 * 3);
  return flop / 1e9;
}

void BM_TaesdDecode(benchmark::State& state) {
  InitOnce();
  (void)GemmPeakGflops();
  const int64_t size = state.range(0);
  const WeightMap weights = RandomWeights(atelier::engine::Taesd::ParameterShapes(atelier::engine::TaesdPart::kDecoder));
  auto taesd = atelier::engine::Taesd::Create(&weights, nullptr);
  if (!taesd.ok()) {
    state.SkipWithError(std::string(taesd.status().message()).c_str());
    return;
  }
  const at::Tensor latent = at::randn({1, 4, size / 8, size / 8});
  const double gflop = TaesdDecodeGflop(size / 8, size / 8);
  TimeCalls(state, gflop, [&] { return (*taesd)->Decode(latent); });
}
BENCHMARK(BM_TaesdDecode)->Arg(512)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

}  // namespace
