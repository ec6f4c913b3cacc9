// The image models at full SD1.5 size with random weights (scaled 1/sqrt(fan_in) so activations stay finite):
// one UNet step for cond+uncond (batch 2) and a VAE decode at 256x256 and 512x512, in float32 (second argument 0)
// and bfloat16 (1: weights converted once, as --dtype bfloat16 does; skipped where the CPU cannot run bf16), and a
// TAESD decode at 512x512. Counters: seconds per call, achieved GFLOP/s (FLOP counts of
// ../shared/docs/perf-baseline.md for the UNet and VAE, counted from the layers here for TAESD), that figure as a
// fraction of the same dtype's GEMM peak measured in the same process, and the process's peak RSS (run one
// benchmark per process for a clean figure: --benchmark_filter=UNetStep/512/0). bench/compare.py runs these beside
// the PyTorch-eager peer.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <functional>
#include <map>
#include <optional>

#include "engine/models/weight_layout.h"
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

// The GEMM peak of this machine in `dtype`, measured once per dtype: the best of 16 2048^3 matmuls.
double GemmPeakGflops(at::ScalarType dtype = at::kFloat) {
  static std::map<at::ScalarType, double> peaks;
  const auto found = peaks.find(dtype);
  if (found != peaks.end()) return found->second;
  InitOnce();
  const int64_t n = 2048;
  const at::Tensor a = at::rand({n, n}).to(dtype), b = at::rand({n, n}).to(dtype);
  double best = 0;
  for (int i = 0; i < 16; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const at::Tensor c = at::mm(a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  std::fprintf(stderr, "%s GEMM peak (2048^3 matmul, best of 16): %.1f GFLOP/s\n", c10::toString(dtype), best);
  return peaks[dtype] = best;
}

// The dtype of the benchmark's second argument (0 float32, 1 bfloat16), or a skip when this CPU cannot run it.
std::optional<at::ScalarType> BenchDtype(benchmark::State& state) {
  if (state.range(1) == 0) return at::kFloat;
  if (!atelier::engine::CpuBf16Supported(atelier::engine::DetectCpuFeatures())) {
    state.SkipWithError("this CPU cannot run bfloat16 (needs AVX-512 BW/VL/DQ)");
    return std::nullopt;
  }
  return at::kBFloat16;
}

// The weights in `dtype`, in the layout the checkpoint loader gives the UNet's or the VAE's.
WeightMap Converted(WeightMap weights, at::ScalarType dtype, bool unet) {
  for (auto& [name, t] : weights) {
    t = t.to(dtype).contiguous(unet ? atelier::engine::PreferredWeightLayout(t)
                                    : atelier::engine::VaeWeightLayout(t, dtype));
  }
  return weights;
}

double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Counters from wall-clock seconds per call (the work is multi-threaded; CPU time of the main thread means little).
void Report(benchmark::State& state, double gflop, double total_seconds, at::ScalarType dtype) {
  const double per_call = total_seconds / static_cast<double>(state.iterations());
  state.counters["s/call"] = per_call;
  state.counters["GFLOP/s"] = gflop / per_call;
  state.counters["gemm_peak_GFLOP/s"] = GemmPeakGflops(dtype);
  state.counters["of_peak"] = gflop / per_call / GemmPeakGflops(dtype);
  state.counters["peak_RSS_MiB"] = PeakRssMiB();
}

// Times `call` once per benchmark iteration (wall clock) and reports the counters; an error skips the benchmark.
void TimeCalls(benchmark::State& state, double gflop, const std::function<absl::StatusOr<at::Tensor>()>& call,
               at::ScalarType dtype = at::kFloat) {
  // One untimed warm-up call, as the peer makes: the first call faults its activations in and primes oneDNN.
  if (auto warm = call(); !warm.ok()) {
    state.SkipWithError(std::string(warm.status().message()).c_str());
    return;
  }
  double total = 0;
  // ATELIER_PROFILE=FILE: a chrome://tracing profile of the timed calls, per libtorch op (bench/profile_ops.py sums it).
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  if (const char* path = std::getenv("ATELIER_PROFILE")) {
    profile = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(path));
  }
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
  Report(state, gflop, total, dtype);
}

void BM_UNetStep(benchmark::State& state) {
  InitOnce();
  const auto dtype = BenchDtype(state);
  if (!dtype) return;
  (void)GemmPeakGflops(*dtype);
  const int64_t size = state.range(0);
  const atelier::engine::UNetConfig config;
  // One model per dtype, kept across sizes (a full UNet takes seconds to make).
  static std::map<at::ScalarType, std::unique_ptr<atelier::engine::UNet>> unets;
  std::unique_ptr<atelier::engine::UNet>& unet = unets[*dtype];
  if (unet == nullptr) {
    auto created = atelier::engine::UNet::Create(
        config, Converted(RandomWeights(atelier::engine::UNet::ParameterShapes(config)), *dtype, /*unet=*/true));
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
  TimeCalls(state, gflop, [&] { return unet->Forward(x, t, context); }, *dtype);
}
BENCHMARK(BM_UNetStep)
    ->Args({256, 0})->Args({512, 0})->Args({256, 1})->Args({512, 1})
    ->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();

void BM_VaeDecode(benchmark::State& state) {
  InitOnce();
  const auto dtype = BenchDtype(state);
  if (!dtype) return;
  (void)GemmPeakGflops(*dtype);
  const int64_t size = state.range(0);
  const atelier::engine::VaeConfig config;
  auto vae = atelier::engine::Vae::Create(
      config, Converted(RandomWeights(atelier::engine::Vae::ParameterShapes(config)), *dtype, /*unet=*/false));
  if (!vae.ok()) {
    state.SkipWithError(std::string(vae.status().message()).c_str());
    return;
  }
  const at::Tensor latent = at::randn({1, 4, size / 8, size / 8});
  const double gflop = 2515.0 * (size * size) / (512.0 * 512.0);
  TimeCalls(state, gflop, [&] { return (*vae)->Decode(latent); }, *dtype);
}
BENCHMARK(BM_VaeDecode)
    ->Args({256, 0})->Args({512, 0})->Args({256, 1})->Args({512, 1})
    ->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();

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
