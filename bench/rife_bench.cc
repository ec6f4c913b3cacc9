// RIFE speed and memory (issue 21), in one run on this machine:
//  - ms per interpolated 512x512 frame with the full-size 4.6 net (the rife-v4 fixture's weights: random values in
//    the released shapes), float32, and bfloat16 where this CPU computes it natively;
//  - beside HolyWu/vs-rife's port of Practical-RIFE's own PyTorch code on Debian's python3-torch, on frames of the
//    same size (bench/rife_peer.py with Debian's /usr/bin/python3; set ATELIER_RIFE_PEER to a vs-rife checkout, skipped
//    otherwise): ratio = ours /
//    peer;
//  - peak RSS growth while a 64-frame sequence at 512x512 goes through x4 (frames streamed, not held).
//   ATELIER_FIXTURES=... build/bench/atelier_bench --benchmark_filter=Rife
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "engine/io/tensor_file.h"
#include "engine/models/runtime.h"
#include "rife_model.h"
#include "rife_sequence.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;

fs::path Fixtures() {
  const char* env = std::getenv("ATELIER_FIXTURES");
  return env != nullptr ? fs::path(env) : fs::path(ATELIER_SOURCE_DIR) / ".." / "shared" / "fixtures";
}

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

long MaxRssMb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

std::unique_ptr<rife::RifeModel> Load(at::ScalarType dtype) {
  auto set = engine::ReadTensorSet(Fixtures() / "rife-v4" / "weights.safetensors");
  if (!set.ok()) return nullptr;
  rife::WeightMap w;
  for (const auto& [name, t] : set->tensors) w[name] = t.to(at::kFloat);
  auto m = rife::RifeModel::Create(w, "rife-v4", at::kCPU, dtype);
  return m.ok() ? std::move(*m) : nullptr;
}

void BM_RifeFrame512(benchmark::State& state) {
  auto model = Load(at::kFloat);
  if (!model) {
    state.SkipWithError("no rife-v4 fixture (ATELIER_FIXTURES)");
    return;
  }
  at::manual_seed(0);
  const at::Tensor a = at::rand({1, 3, 512, 512}), b = at::rand({1, 3, 512, 512});
  (void)model->InterpolatePadded(a, b, 0.5, 1.0);  // warm-up
  double fp32 = 0;
  for (auto _ : state) fp32 += Seconds([&] { benchmark::DoNotOptimize(model->InterpolatePadded(a, b, 0.5, 1.0)); });
  const double n = static_cast<double>(state.iterations());
  state.counters["fp32_ms"] = fp32 / n * 1000;
  if (engine::CpuBf16Native(engine::DetectCpuFeatures())) {
    auto bf16 = Load(at::kBFloat16);
    (void)bf16->InterpolatePadded(a, b, 0.5, 1.0);
    double t = 0;
    for (int i = 0; i < 2; ++i) t += Seconds([&] { benchmark::DoNotOptimize(bf16->InterpolatePadded(a, b, 0.5, 1.0)); });
    state.counters["bf16_ms"] = t / 2 * 1000;
  }
  if (const char* peer = std::getenv("ATELIER_RIFE_PEER")) {
    const fs::path out = fs::temp_directory_path() / "atelier-rife-peer.json";
    const std::string cmd = std::string("/usr/bin/python3 ") + ATELIER_SOURCE_DIR + "/bench/rife_peer.py --vsrife " + peer +
                            " --weights " + (Fixtures() / "rife-v4" / "weights.safetensors").string() + " > " + out.string();
    if (std::system(cmd.c_str()) == 0) {
      const auto j = nlohmann::json::parse(std::ifstream(out), nullptr, false);
      if (j.is_object()) {
        state.counters["peer_ms"] = j["ms_per_frame"].get<double>();
        state.counters["ratio_vs_peer"] = fp32 / n * 1000 / j["ms_per_frame"].get<double>();
      }
    }
  }
}
BENCHMARK(BM_RifeFrame512)->Iterations(4)->Unit(benchmark::kMillisecond);

void BM_RifeStream64FramesX4Memory(benchmark::State& state) {
  auto model = Load(at::kFloat);
  if (!model) {
    state.SkipWithError("no rife-v4 fixture (ATELIER_FIXTURES)");
    return;
  }
  for (auto _ : state) {
    const long before = MaxRssMb();
    rife::SequenceOptions o;
    o.gap_frames = rife::GapFrames(4);
    rife::FrameInterpolator interp(*model, o);
    int made = 0;
    for (int i = 0; i < 64; ++i) {
      const at::Tensor frame = at::full({1, 3, 512, 512}, (i % 16) / 16.0);  // stands for a decoded frame
      (void)interp.Add(frame, [&](const at::Tensor&, bool, bool) { ++made; return absl::OkStatus(); });
    }
    state.counters["frames_out"] = made;
    state.counters["rss_growth_mb"] = static_cast<double>(MaxRssMb() - before);
    // All 253 frames at float32 would take:
    state.counters["all_frames_f32_mb"] = 253.0 * 3 * 512 * 512 * 4 / (1 << 20);
  }
}
BENCHMARK(BM_RifeStream64FramesX4Memory)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace atelier
