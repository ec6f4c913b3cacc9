// Sampler overhead: the time a sampling run spends outside the model (schedule, CFG batching and mix, the
// sampler's arithmetic, step noise, progress bookkeeping, NaN check).
// - SamplerOverhead/<sampler>/<px>: with the tiny SD1.x-architecture UNet (the fixtures' configuration, random
//   weights) at 128x128 (latent 16x16, the fixtures' size) and 256x256, 20 steps, batch 1 (cond + uncond rows).
//   Counters: model_ms/eval, overhead_ms/eval and overhead_ratio (= overhead / model time, same run; the bound
//   is 0.01).
// - SamplerOnly/<sampler>: a model that returns at once, 50 steps at 16x16: the sampler's own cost per evaluation.
// - BrownianQuery: one Brownian-tree increment (the SDE samplers' noise) per step, 16x16.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>

#include "engine/sampling/brownian_tree.h"
#include "engine/sampling/noise.h"
#include "engine/models/runtime.h"
#include "engine/sampling/samplers.h"
#include "engine/models/unet.h"
#include "random_weights.h"

namespace {

namespace engine = atelier::engine;
using Clock = std::chrono::steady_clock;

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

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// One txt2img sampling run with seeded CPU noise; returns its wall time, or an error.
absl::StatusOr<double> TimedRun(const char* sampler, int steps, int64_t latent, engine::EpsModel model) {
  static const engine::ModelSchedule schedule(engine::ComputeAlphasCumprod(engine::ScheduleConfig()));
  static const at::Tensor cond = at::randn({77, 32}), uncond = at::randn({77, 32});
  engine::SamplingSettings settings;
  auto choice = engine::ResolveSampler(sampler, "");
  if (!choice.ok()) return choice.status();
  settings.choice = *choice;
  settings.steps = steps;
  const auto t0 = Clock::now();
  engine::NoiseOptions noise;
  noise.shape = {4, latent, latent};
  noise.seeds = {1234};
  noise.source = engine::NoiseSource::kCpu;
  auto rng = engine::ImageRng::Create(noise);
  if (!rng.ok()) return rng.status();
  auto first = rng->First();
  if (!first.ok()) return first.status();
  engine::SamplingInputs in;
  in.model = std::move(model);
  in.conditioning.cond.push_back({engine::WeightedCond{engine::ScheduledCond::Fixed(cond), 1.0}});
  in.conditioning.uncond.push_back(engine::ScheduledCond::Fixed(uncond));
  in.noise = *first;
  in.step_noise = engine::StepNoiseFrom(&*rng);
  in.seeds = {1234};
  auto result = engine::Sample(settings, schedule, std::move(in));
  if (!result.ok()) return result.status();
  return Seconds(t0);
}

void BM_SamplerOverhead(benchmark::State& state) {
  const engine::UNet* unet = TinyUNet();
  if (unet == nullptr) {
    state.SkipWithError("tiny UNet");
    return;
  }
  const char* name = kSamplers[state.range(0)];
  state.SetLabel(name);
  double model_seconds = 0, total_seconds = 0;
  int evals = 0;
  for (auto _ : state) {
    auto seconds = TimedRun(name, 20, state.range(1) / 8, [&](engine::ModelCall& call) {
      const auto m0 = Clock::now();
      auto eps = unet->Forward(call.x, call.timesteps, call.context);
      model_seconds += Seconds(m0);
      ++evals;
      return eps;
    });
    if (!seconds.ok()) {
      state.SkipWithError(std::string(seconds.status().message()).c_str());
      return;
    }
    total_seconds += *seconds;
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

void BM_SamplerOnly(benchmark::State& state) {
  const char* name = kSamplers[state.range(0)];
  state.SetLabel(name);
  const at::Tensor eps = at::randn({2, 4, 16, 16}) * 0.1;
  int evals = 0;
  double total_seconds = 0;
  for (auto _ : state) {
    auto seconds = TimedRun(name, 50, 16, [&](engine::ModelCall&) {
      ++evals;
      return absl::StatusOr<at::Tensor>(eps);
    });
    if (!seconds.ok()) {
      state.SkipWithError(std::string(seconds.status().message()).c_str());
      return;
    }
    total_seconds += *seconds;
  }
  state.counters["us/eval"] = 1e6 * total_seconds / evals;
}
BENCHMARK(BM_SamplerOnly)->DenseRange(0, 6)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

namespace {
// One Brownian-tree query per step along a 50-step Karras-like schedule, 16x16 latent: the SDE samplers' noise.
void BM_BrownianQuery(benchmark::State& state) {
  int queries = 0;
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    engine::BrownianTreeNoise tree({4, 16, 16}, {1234}, 0.0292, 14.6146, at::kCPU);
    double sigma = 14.6146;
    for (int i = 0; i < 50; ++i) {
      const double next = sigma * 0.9;
      benchmark::DoNotOptimize(tree(sigma, next).data_ptr());
      sigma = next;
      ++queries;
    }
    seconds += Seconds(t0);
  }
  state.counters["us/query"] = 1e6 * seconds / queries;
}
BENCHMARK(BM_BrownianQuery)->Unit(benchmark::kMillisecond)->UseRealTime();
}  // namespace
