// CUDA check of the image models (run on the lent GPU machine against its libtorch 2.x): the UNet and VAE at
// full SD1.5 size with random weights give the same numbers on CUDA (fp32, TF32 off; SDPA attention) as on the CPU
// (blocked attention), fp16 stays close, and the timings of one UNet step (batch 2) and a VAE decode.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <functional>
#include <vector>

#include "engine/models/nn_util.h"
#include "engine/models/unet.h"
#include "engine/models/vae.h"

using namespace atelier::engine;

WeightMap Random(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  at::manual_seed(0);
  WeightMap w;
  for (const auto& [name, shape] : shapes) {
    int64_t fan = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan *= shape[i];
    // 1-D weights are norm scales (GroupNorm/LayerNorm, whatever their names): about 1; biases small.
    const bool is_weight = name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0;
    w[name] = shape.size() == 1 ? (is_weight ? 1 + 0.1 * at::randn(shape) : 0.1 * at::randn(shape))
                                : at::randn(shape) / std::sqrt(static_cast<double>(fan));
  }
  return w;
}
WeightMap To(const WeightMap& w, at::ScalarType dtype, at::Device device) {
  WeightMap out;
  for (const auto& [k, t] : w) out[k] = t.to(at::TensorOptions().dtype(dtype).device(device));
  return out;
}
double Rel(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kCPU).to(at::kDouble), y = b.to(at::kCPU).to(at::kDouble);
  return ((x - y).norm() / y.norm()).item<double>();
}
// Timing of f(), whose result is read back (which waits for the GPU).
double Median(const std::function<at::Tensor()>& f, int reps) {
  (void)f().flatten()[0].item<float>();
  (void)f().flatten()[0].item<float>();
  std::vector<double> ts;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    (void)f().flatten()[0].item<float>();
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}
#define CHECK_OK(x) do { const auto& _s = (x); if (!_s.ok()) { std::printf("FAIL %s: %s\n", #x, std::string(_s.status().message()).c_str()); return 1; } } while (0)

int main() {
  at::set_num_threads(16);
  at::Device cuda(at::kCUDA, 0);
  int failures = 0;
  auto expect = [&](bool ok, const char* what, double value, double bound) {
    std::printf("%-55s %.3g (bound %.3g) %s\n", what, value, bound, ok ? "ok" : "FAIL");
    failures += ok ? 0 : 1;
  };
  const UNetConfig uc;
  const WeightMap uw = Random(UNet::ParameterShapes(uc));
  auto cpu = UNet::Create(uc, uw);
  auto gpu32 = UNet::Create(uc, To(uw, at::kFloat, cuda));
  auto gpu16 = UNet::Create(uc, To(uw, at::kHalf, cuda));
  CHECK_OK(cpu); CHECK_OK(gpu32); CHECK_OK(gpu16);
  std::printf("attention on CUDA: %s; on CPU: %s\n", AttentionKind(at::empty({0}, cuda)).c_str(), AttentionKind(at::empty({0})).c_str());
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 4, 32, 32}), t = at::tensor({999.0, 500.5}), ctx = at::randn({2, 77, 768});
  auto want = (*cpu)->Forward(x, t, ctx);
  CHECK_OK(want);
  std::printf("CPU eps finite: %d, |eps| mean %.3g\n", at::isfinite(*want).all().item<bool>(), want->abs().mean().item<double>());
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  auto got32 = (*gpu32)->Forward(x.to(cuda), t.to(cuda), ctx.to(cuda));
  CHECK_OK(got32);
  std::printf("CUDA fp32 eps finite: %d, |eps| mean %.3g\n", at::isfinite(*got32).all().item<bool>(), got32->abs().mean().item<double>());
  {
    // Attention alone: SDPA on CUDA vs the blocked CPU attention.
    const at::Tensor q = at::randn({16, 1024, 40}), k = at::randn({16, 77, 40}), v = at::randn({16, 77, 40});
    const at::Tensor a = Attention(q, k, v, 0.158), b = Attention(q.to(cuda), k.to(cuda), v.to(cuda), 0.158);
    expect(Rel(b, a) < 1e-5, "Attention CUDA SDPA fp32 vs CPU blocked, rel RMS", Rel(b, a), 1e-5);
  }
  expect(Rel(*got32, *want) < 1e-4, "UNet 256 CUDA fp32 (TF32 off) vs CPU, rel RMS", Rel(*got32, *want), 1e-4);
  auto got16 = (*gpu16)->Forward(x.to(cuda), t.to(cuda), ctx.to(cuda));
  CHECK_OK(got16);
  std::printf("CUDA fp16 eps finite: %d\n", at::isfinite(*got16).all().item<bool>());
  expect(Rel(*got16, *want) < 2e-2, "UNet 256 CUDA fp16 vs CPU fp32, rel RMS", Rel(*got16, *want), 2e-2);
  expect(got16->scalar_type() == at::kFloat, "UNet output dtype float32", 0, 0);
  at::globalContext().setAllowTF32CuDNN(true);
  at::globalContext().setAllowTF32CuBLAS(true);
  for (int64_t size : {256, 512}) {
    const at::Tensor xs = at::randn({2, 4, size / 8, size / 8}, cuda), ts = at::full({2}, 999.0, cuda), cs = at::randn({2, 77, 768}, cuda);
    const double gflop = size == 512 ? 1606 : 360;
    const double s16 = Median([&] { return *(*gpu16)->Forward(xs, ts, cs); }, 10);
    const double s32 = Median([&] { return *(*gpu32)->Forward(xs, ts, cs); }, 10);
    std::printf("UNet step %ld (batch 2): fp16 %.1f ms (%.0f TFLOP/s), fp32/TF32 %.1f ms (%.0f TFLOP/s)\n", size, s16 * 1e3,
                gflop / s16 / 1e3, s32 * 1e3, gflop / s32 / 1e3);
  }
  at::globalContext().setAllowTF32CuDNN(false);
  const VaeConfig vc;
  const WeightMap vw = Random(Vae::ParameterShapes(vc));
  auto vcpu = Vae::Create(vc, vw);
  auto v32 = Vae::Create(vc, To(vw, at::kFloat, cuda));
  auto v16 = Vae::Create(vc, To(vw, at::kHalf, cuda));
  CHECK_OK(vcpu); CHECK_OK(v32); CHECK_OK(v16);
  const at::Tensor z = at::randn({1, 4, 32, 32});
  auto dwant = (*vcpu)->Decode(z);
  auto d32 = (*v32)->Decode(z.to(cuda));
  auto d16 = (*v16)->Decode(z.to(cuda));
  CHECK_OK(dwant); CHECK_OK(d32); CHECK_OK(d16);
  expect(Rel(*d32, *dwant) < 1e-3, "VAE decode 256 CUDA fp32 vs CPU, rel RMS", Rel(*d32, *dwant), 1e-3);
  expect(Rel(*d16, *dwant) < 2e-2, "VAE decode 256 CUDA fp16 vs CPU fp32, rel RMS", Rel(*d16, *dwant), 2e-2);
  VaeCallOptions tiled;
  tiled.mode = VaeTileMode::kAlways;
  tiled.tiling = {16, 8};
  auto dt = (*v32)->Decode(z.to(cuda), tiled);
  CHECK_OK(dt);
  expect(Rel(*dt, *dwant) < 0.1, "VAE tiled decode on CUDA vs untiled CPU, rel RMS", Rel(*dt, *dwant), 0.1);
  at::globalContext().setAllowTF32CuDNN(true);
  const at::Tensor z512 = at::randn({1, 4, 64, 64}, cuda);
  const double vs16 = Median([&] { return *(*v16)->Decode(z512); }, 5);
  const double vs32 = Median([&] { return *(*v32)->Decode(z512); }, 5);
  std::printf("VAE decode 512: fp16 %.1f ms (%.0f TFLOP/s), fp32/TF32 %.1f ms\n", vs16 * 1e3, 2515 / vs16 / 1e3, vs32 * 1e3);
  std::printf("peak CUDA memory: see nvidia-smi; failures: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
