// CUDA check of the noise sources (run on the lent GPU machine by tests/cuda/run.sh): "GPU" on a CUDA device (a
// fresh CUDA generator) equals WebUI's NV Philox emulation, which is what the "GPU" source gives on a CPU device;
// ImageRng on CUDA with ENSD equals the same on the CPU.
#include <ATen/ATen.h>

#include <cstdio>

#include "engine/sampling/noise.h"

using namespace atelier::engine;

int main() {
  int failures = 0;
  // Each comparison prints its error and counts a failure; the TORCH_CHECK at the end fails the run on any.
  auto expect_close = [&](const char* what, const at::Tensor& a, const at::Tensor& b) {
    const double err = (a.to(at::kCPU) - b.to(at::kCPU)).abs().max().item<double>();
    const bool ok = err <= 1e-5;
    std::printf("%-48s max abs %.3g %s\n", what, err, ok ? "ok" : "FAIL");
    failures += !ok;
  };
  const at::Device cuda(at::kCUDA, 0);
  for (const uint64_t seed : {0ull, 42ull, 3492909164ull, 4294967295ull}) {
    auto gpu = CreateNoiseGenerator(NoiseSource::kGpu, seed, cuda);
    auto nv = CreateNoiseGenerator(NoiseSource::kNv, seed, at::kCPU);
    TORCH_CHECK(gpu.ok() && nv.ok(), "creating the generators failed");
    for (int call = 0; call < 3; ++call) {
      char what[96];
      std::snprintf(what, sizeof what, "seed %llu call %d [4,112,76]", static_cast<unsigned long long>(seed), call);
      expect_close(what, (*gpu)->Randn({4, 112, 76}), (*nv)->Randn({4, 112, 76}));
    }
  }
  NoiseOptions o;
  o.shape = {4, 64, 64};
  o.seeds = {42, 43};
  o.subseeds = {7, 8};
  o.subseed_strength = 0.3;
  o.eta_noise_seed_delta = 31337;
  o.source = NoiseSource::kGpu;
  auto on_cpu = ImageRng::Create(o);
  o.device = cuda;
  auto on_cuda = ImageRng::Create(o);
  TORCH_CHECK(on_cpu.ok() && on_cuda.ok(), "creating ImageRng failed");
  expect_close("ImageRng first (GPU source, CUDA vs CPU)", *on_cuda->First(), *on_cpu->First());
  expect_close("ImageRng step1 (GPU source, CUDA vs CPU)", *on_cuda->Next(), *on_cpu->Next());
  std::printf("%s\n", failures == 0 ? "noise: all ok" : "noise: FAILED");
  // The verdict: any failed comparison (each printed above with its error) fails the program and run.sh.
  TORCH_CHECK(failures == 0, failures, " noise comparison(s) exceeded 1e-5");
  return 0;
}
