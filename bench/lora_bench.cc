// LoRA cost (issue 22), in one run: applying and removing a rank-32 LoRA on every attention and feed-forward layer
// of the full SD1.5 UNet (random weights in the released shapes, 112 modules as kohya trains them) against one
// 512x512 UNet step with cond + uncond rows; and the next job with the same networks, which swaps the kept patched
// tensors in and out (what JobLoras does from its LoraPatchCache) instead of computing them.
//   build/bench/atelier_bench --benchmark_filter=Lora
#include <benchmark/benchmark.h>

#include <chrono>
#include <functional>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "engine/models/lora.h"
#include "engine/models/runtime.h"
#include "engine/models/unet.h"
#include "random_weights.h"

namespace atelier {
namespace {

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_LoraApplyVsUNetStep(benchmark::State& state) {
  (void)engine::InitRuntime({"cpu", 0});  // threads = cores, as the daemon runs
  engine::UNetConfig config;  // SD1.5
  const auto shapes = engine::UNet::ParameterShapes(config);
  auto unet = engine::UNet::Create(config, bench::RandomWeights(shapes));
  std::vector<std::pair<std::string, size_t>> names;
  std::map<std::string, at::Tensor> lora;
  at::manual_seed(0);
  int modules = 0;
  for (const auto& [name, shape] : shapes) {
    names.emplace_back(name, shape.size());
    const bool target = absl::StrContains(name, "transformer_blocks.0.") && shape.size() == 2 &&
                        (absl::StrContains(name, ".to_") || absl::StrContains(name, ".ff.net."));
    if (!target) continue;
    const std::string module = "lora_unet_" + name.substr(0, name.size() - 7);
    std::string key = module;
    for (char& c : key) c = c == '.' ? '_' : c;
    lora[key + ".lora_up.weight"] = at::randn({shape[0], 32}) * 0.01;
    lora[key + ".lora_down.weight"] = at::randn({32, shape[1]}) * 0.01;
    lora[key + ".alpha"] = at::scalar_tensor(16.0);
    ++modules;
  }
  const auto map = engine::LoraNameMap::Build(names, {});
  auto net = engine::LoraNetwork::FromTensors(lora, map, "bench");
  if (!unet.ok() || !net.ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  const at::Tensor x = at::randn({2, 4, 64, 64}), t = at::full({2}, 500.0), ctx = at::randn({2, 77, 768});
  const double step = Seconds([&] { benchmark::DoNotOptimize((*unet)->Forward(x, t, ctx)); });
  double apply = 0;
  for (auto _ : state) {
    apply += Seconds([&] {
      auto patch = engine::ApplyLoras(unet->get(), nullptr, {{net->get(), 1.0, 1.0}});
      (void)engine::RestoreLoras(unet->get(), nullptr, *patch);
    });
  }
  apply /= static_cast<double>(state.iterations());
  // The next job with the same networks: the patched tensors kept from the last one are swapped in, then out.
  auto patch = engine::ApplyLoras(unet->get(), nullptr, {{net->get(), 1.0, 1.0}});
  std::vector<std::pair<std::string, at::Tensor>> patched;
  for (const auto& [te, name, original] : patch->originals) patched.emplace_back(name, *(*unet)->Parameter(name));
  (void)engine::RestoreLoras(unet->get(), nullptr, *patch);
  const double reuse = Seconds([&] {
    for (int i = 0; i < 10; ++i) {
      for (const auto& [name, t] : patched) (void)(*unet)->ReplaceParameter(name, t);
      (void)engine::RestoreLoras(unet->get(), nullptr, *patch);
    }
  }) / 10;
  state.counters["next_job_s"] = reuse;
  state.counters["next_job_share_of_step"] = reuse / step;
  state.counters["modules"] = modules;
  state.counters["apply_restore_s"] = apply;
  state.counters["unet_step_s"] = step;
  state.counters["share_of_step"] = apply / step;
}
BENCHMARK(BM_LoraApplyVsUNetStep)->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace atelier
