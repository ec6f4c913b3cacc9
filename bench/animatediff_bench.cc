// AnimateDiff cost (issue 23), in one run on this machine: one denoiser step of a 16-frame clip (one context window
// of 16 frames, cond and uncond rows: 32 UNet rows) on the full SD1.5 UNet with the full-size v3 motion modules at
// its 21 block points (random weights in the released shapes, from ../shared/manifests), beside the same UNet
// without them: seconds per frame-step and the modules' share. ATELIER_ANIMATEDIFF_BENCH_SIZE sets the image side
// (default 256; 512 takes minutes on two cores). Also the peak RSS.
//   build/bench/atelier_bench --benchmark_filter=AnimateDiff
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "engine/models/runtime.h"
#include "engine/models/unet.h"
#include "context_schedule.h"
#include "motion_module.h"
#include "random_weights.h"

namespace atelier {
namespace {

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The full-size v3 motion modules (shapes from ../shared/manifests) with random weights and the fixed sinusoid
// position encodings. NOT_FOUND without the manifest.
absl::StatusOr<std::unique_ptr<animatediff::MotionModuleSet>> FullSizeV3Modules() {
  std::ifstream in(std::string(ATELIER_SOURCE_DIR) + "/../shared/manifests/animatediff-mm-sd15-v3.json");
  const auto manifest = nlohmann::json::parse(in, nullptr, false);
  if (manifest.is_discarded()) return absl::NotFoundError("no ../shared/manifests/animatediff-mm-sd15-v3.json");
  std::vector<std::pair<std::string, std::vector<int64_t>>> mm_shapes;
  for (const auto& [name, shape] : manifest["tensors"].items()) mm_shapes.emplace_back(name, shape.get<std::vector<int64_t>>());
  engine::WeightMap mm = bench::RandomWeights(mm_shapes);
  for (auto& [name, t] : mm) {
    if (name.find("pos_encoder.pe") != std::string::npos) t = animatediff::PositionEncoding(t.size(1), t.size(2));
  }
  return animatediff::MotionModuleSet::FromTensors(std::map<std::string, at::Tensor>(mm.begin(), mm.end()), "v3",
                                                   at::kCPU, at::kFloat);
}

void BM_AnimateDiffFrameStep(benchmark::State& state) {
  (void)engine::InitRuntime({"cpu", 0});
  auto set = FullSizeV3Modules();
  if (!set.ok() && absl::IsNotFound(set.status())) {
    state.SkipWithError(std::string(set.status().message()).c_str());
    return;
  }
  engine::UNetConfig config;  // SD1.5
  auto unet = engine::UNet::Create(config, bench::RandomWeights(engine::UNet::ParameterShapes(config)));
  if (!set.ok() || !unet.ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  const char* size_env = std::getenv("ATELIER_ANIMATEDIFF_BENCH_SIZE");
  const int64_t side = size_env != nullptr ? std::atoi(size_env) : 256, frames = 16;
  const at::Tensor x = at::randn({2 * frames, 4, side / 8, side / 8}), t = at::full({2 * frames}, 500.0);
  const at::Tensor ctx = at::randn({2 * frames, 77, 768});
  engine::UNetCallOptions with_motion;
  with_motion.block_hook = [&](const engine::UNetBlockPoint& where, at::Tensor& hidden) -> absl::Status {
    auto out = (*set)->Forward(where.point, hidden, frames);
    if (!out.ok()) return out.status();
    hidden = *out;
    return absl::OkStatus();
  };
  double plain = 0, motion = 0;
  for (auto _ : state) {
    plain += Seconds([&] { benchmark::DoNotOptimize((*unet)->Forward(x, t, ctx)); });
    motion += Seconds([&] { benchmark::DoNotOptimize((*unet)->Forward(x, t, ctx, with_motion)); });
  }
  const double n = static_cast<double>(state.iterations());
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  state.counters["side"] = static_cast<double>(side);
  state.counters["plain_s_per_frame_step"] = plain / n / frames;
  state.counters["motion_s_per_frame_step"] = motion / n / frames;
  state.counters["motion_share"] = motion / plain - 1;
  state.counters["peak_rss_mb"] = static_cast<double>(u.ru_maxrss) / 1024;
}
BENCHMARK(BM_AnimateDiffFrameStep)->Iterations(1)->Unit(benchmark::kSecond);

// Memory of a long clip: one denoiser step of 32 frames with context 16 (the plugin's windows: each window's 16
// frames, cond and uncond rows, in one UNet call; the last window writes a frame), against the same 32 frames in one
// call. Run each alone (--benchmark_filter=AnimateDiffWindows / AnimateDiffWhole): peak RSS is per process.
void RunClip(benchmark::State& state, bool windows) {
  (void)engine::InitRuntime({"cpu", 0});
  auto set = FullSizeV3Modules();
  if (!set.ok() && absl::IsNotFound(set.status())) {
    state.SkipWithError(std::string(set.status().message()).c_str());
    return;
  }
  engine::UNetConfig config;
  auto unet = engine::UNet::Create(config, bench::RandomWeights(engine::UNet::ParameterShapes(config)));
  if (!set.ok() || !unet.ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  const int64_t frames = 32, context = windows ? 16 : 32, side = 256;
  const at::Tensor x = at::randn({2 * frames, 4, side / 8, side / 8}), t = at::full({2 * frames}, 500.0);
  const at::Tensor ctx = at::randn({2 * frames, 77, 768});
  int64_t window_frames = context;
  engine::UNetCallOptions options;
  options.block_hook = [&](const engine::UNetBlockPoint& where, at::Tensor& hidden) -> absl::Status {
    auto out = (*set)->Forward(where.point, hidden, window_frames);
    if (!out.ok()) return out.status();
    hidden = *out;
    return absl::OkStatus();
  };
  double seconds = 0;
  for (auto _ : state) {
    seconds += Seconds([&] {
      at::Tensor eps = at::zeros_like(x);
      for (const auto& window : animatediff::ContextWindows(0, frames, context, 1, context / 4,
                                                            animatediff::ClosedLoop::kRMinusP)) {
        std::vector<int64_t> rows;
        for (int64_t v = 0; v < 2; ++v) {
          for (int f : window) rows.push_back(v * frames + f);
        }
        const at::Tensor index = at::tensor(rows, at::kLong);
        window_frames = static_cast<int64_t>(window.size());
        auto out = (*unet)->Forward(x.index_select(0, index), t.index_select(0, index), ctx.index_select(0, index), options);
        if (out.ok()) eps.index_copy_(0, index, *out);
      }
    });
  }
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  state.counters["frames"] = static_cast<double>(frames);
  state.counters["context"] = static_cast<double>(context);
  state.counters["step_s"] = seconds / static_cast<double>(state.iterations());
  state.counters["peak_rss_mb"] = static_cast<double>(u.ru_maxrss) / 1024;
}
void BM_AnimateDiffWindows(benchmark::State& state) { RunClip(state, true); }
void BM_AnimateDiffWhole(benchmark::State& state) { RunClip(state, false); }
BENCHMARK(BM_AnimateDiffWindows)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_AnimateDiffWhole)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace atelier
