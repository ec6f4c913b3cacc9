// Sampler overhead: the time a sampling run spends outside the model (schedule, CFG batching and mix, the
// sampler's arithmetic, step noise, progress bookkeeping, NaN check), as a fraction of the model's own time, for
// the tiny SD1.x-architecture UNet (the fixtures' configuration, random weights) at 128x128 (latent 16x16, the
// fixtures' size) and 256x256, 20 steps, batch 1 (cond + uncond rows). Counters: model_ms/eval, overhead_ms/eval and overhead_ratio
// (= overhead / model time, measured in the same run; the bound is 0.01).
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>

#include "engine/noise.h"
#include "engine/runtime.h"
#include "engine/samplers.h"
#include "engine/unet.h"
#include "random_weights.h"

namespace {

namespace engine = atelier::engine;

const engine::UNet* TinyUNet() {
  static const std::unique_ptr<engine::UNet> unet = [] {
    (void)engine::InitRuntime({"cpu", 0});
    engine::UNetConfig config;
    config.model_channels = 32;
    config.channel_mult = {1, 1, 1, 2};
    config.num_heads = 4;
    config.num_head_channels = -1;
    config.context_dim = 32;
    auto created = engine::UNet::Create(config, atelier::bench::RandomWeights(engine::UNet::ParameterShapes(config)));
    return created.ok() ? *std::move(created) : nullptr;
  }();
  return unet.get();
}

const char* const kSamplers[] = {"Euler a", "DPM++ 2M", "DPM++ 2M SDE", "Heun", "DDIM", "UniPC", "LMS"};

void BM_SamplerOverhead(benchmark::State& state) {
  const engine::UNet* unet = TinyUNet();
  if (unet == nullptr) {
    state.SkipWithError("tiny UNet");
    return;
  }
  const char* name = kSamplers[state.range(0)];
  const int64_t latent = state.range(1) / 8;
  state.SetLabel(name);
  auto choice = engine::ResolveSampler(name, "");
  engine::SamplingSettings settings;
  settings.choice = *choice;
  settings.steps = 20;
  const engine::ModelSchedule schedule(engine::ComputeAlphasCumprod(engine::ScheduleConfig()));
  const at::Tensor cond = at::randn({77, 32}), uncond = at::randn({77, 32});

  double model_seconds = 0, total_seconds = 0;
  int evals = 0;
  for (auto _ : state) {
    engine::NoiseOptions noise_options;
    noise_options.shape = {4, latent, latent};
    noise_options.seeds = {1234};
    noise_options.source = engine::NoiseSource::kCpu;
    auto rng = engine::ImageRng::Create(noise_options);
    const auto t0 = std::chrono::steady_clock::now();
    engine::SamplingInputs in;
    in.model = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& ctx) {
      const auto m0 = std::chrono::steady_clock::now();
      auto eps = unet->Forward(x, t, ctx);
      model_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - m0).count();
      ++evals;
      return eps;
    };
    in.conditioning.cond.push_back({engine::WeightedCond{engine::ScheduledCond::Fixed(cond), 1.0}});
    in.conditioning.uncond.push_back(engine::ScheduledCond::Fixed(uncond));
    in.noise = *rng->First();
    in.step_noise = [&](double, double) { return *rng->Next(); };
    in.seeds = {1234};
    auto result = engine::Sample(settings, schedule, std::move(in));
    total_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!result.ok()) {
      state.SkipWithError(std::string(result.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(result->latent.data_ptr());
  }
  const double overhead = total_seconds - model_seconds;
  state.counters["model_ms/eval"] = 1e3 * model_seconds / evals;
  state.counters["overhead_ms/eval"] = 1e3 * overhead / evals;
  state.counters["overhead_ratio"] = overhead / model_seconds;
}
BENCHMARK(BM_SamplerOverhead)
    ->ArgsProduct({benchmark::CreateDenseRange(0, 6, 1), {128, 256}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2)
    ->UseRealTime();

}  // namespace

// The same loop with a model that returns at once: the sampler's own cost per evaluation, in microseconds.
void BM_SamplerOnly(benchmark::State& state) {
  const char* name = kSamplers[state.range(0)];
  state.SetLabel(name);
  auto choice = engine::ResolveSampler(name, "");
  engine::SamplingSettings settings;
  settings.choice = *choice;
  settings.steps = 50;
  const engine::ModelSchedule schedule(engine::ComputeAlphasCumprod(engine::ScheduleConfig()));
  const at::Tensor cond = at::randn({77, 32}), uncond = at::randn({77, 32});
  const at::Tensor eps = at::randn({2, 4, 16, 16}) * 0.1;
  int evals = 0;
  double total_seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    engine::NoiseOptions noise_options;
    noise_options.shape = {4, 16, 16};
    noise_options.seeds = {1234};
    noise_options.source = engine::NoiseSource::kCpu;
    auto rng = engine::ImageRng::Create(noise_options);
    engine::SamplingInputs in;
    in.model = [&](const at::Tensor&, const at::Tensor&, const at::Tensor&) -> absl::StatusOr<at::Tensor> {
      ++evals;
      return eps;
    };
    in.conditioning.cond.push_back({engine::WeightedCond{engine::ScheduledCond::Fixed(cond), 1.0}});
    in.conditioning.uncond.push_back(engine::ScheduledCond::Fixed(uncond));
    in.noise = *rng->First();
    in.step_noise = engine::StepNoiseFrom(&*rng);
    in.seeds = {1234};
    auto result = engine::Sample(settings, schedule, std::move(in));
    total_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!result.ok()) {
      state.SkipWithError(std::string(result.status().message()).c_str());
      return;
    }
  }
  state.counters["us/eval"] = 1e6 * total_seconds / evals;
}
BENCHMARK(BM_SamplerOnly)->DenseRange(0, 6)->Unit(benchmark::kMillisecond)->UseRealTime();
