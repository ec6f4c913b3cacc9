// libtorch matmul throughput: checks that OpenBLAS (not Debian's reference BLAS) serves libtorch. Reports GFLOP/s;
// the reference BLAS gives ~6 on 2 cores, OpenBLAS ~185 (UNet attention and convolutions depend on it).
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>

#include "engine/models/runtime.h"

namespace {

void BM_Matmul(benchmark::State& state) {
  static const bool initialized = [] {
    auto info = atelier::engine::InitRuntime({"cpu", 0});
    return info.ok();
  }();
  if (!initialized) state.SkipWithError("runtime init failed");
  const int64_t n = state.range(0);
  at::Tensor a = at::rand({n, n});
  at::Tensor b = at::rand({n, n});
  for (auto _ : state) {
    at::Tensor c = at::mm(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Matmul)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);

}  // namespace
