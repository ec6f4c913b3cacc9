// Sampling: every WebUI sampler x schedule reproduces the `samplers` goldens on the tiny UNet (the recorded
// random tensors are replayed in call order, so the results do not depend on an RNG), with WebUI's CFG batch
// layout, per-step callbacks, interruption, plugin hook points and the NaN check.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "engine/sampling/samplers.h"
#include "engine/models/unet.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "test_support.h"

namespace atelier {
namespace {

using engine::CfgConditioning;
using engine::ScheduledCond;
using testing::AllClose;

// The tiny UNet and schedule of a samplers case.
struct TinyModel {
  std::unique_ptr<engine::UNet> unet;
  std::unique_ptr<engine::ModelSchedule> schedule;
  int calls = 0;

  engine::EpsModel Eps() {
    return [this](engine::ModelCall& call) {
      const at::Tensor& x = call.x;
      const at::Tensor& t = call.timesteps;
      const at::Tensor& ctx = call.context;
      ++calls;
      return unet->Forward(x, t, ctx);
    };
  }
};

TinyModel LoadTiny(const testing::FixtureCase& c) {
  TinyModel m;
  auto unet = engine::UNet::Create(testing::UNetConfigOf(c.json["config"]["unet"]),
                                   testing::ReadWeights(c, "model.diffusion_model."));
  EXPECT_TRUE(unet.ok()) << unet.status();
  if (unet.ok()) m.unet = *std::move(unet);
  const auto schedule_weights = testing::ReadWeights(c, "alphas_cumprod");
  m.schedule = std::make_unique<engine::ModelSchedule>(schedule_weights.at(""));
  return m;
}

CfgConditioning OnePrompt(const testing::FixtureCase& c) {
  CfgConditioning cond;
  cond.cond.push_back({engine::WeightedCond{ScheduledCond::Fixed(c.io.at("cond")[0]), 1.0}});
  cond.uncond.push_back(ScheduledCond::Fixed(c.io.at("uncond")[0]));
  return cond;
}

// A sampler option the case records as a number in its config or values ("inf" is infinity); false when it records
// none (WebUI's default then applies).
bool CaseOption(const testing::FixtureCase& c, const char* key, double* out) {
  for (const char* part : {"config", "values"}) {
    if (!c.json.contains(part) || !c.json[part].is_object() || !c.json[part].contains(key)) continue;
    const nlohmann::json& value = c.json[part][key];
    if (value.is_number()) {
      *out = value.get<double>();
      return true;
    }
    if (value.is_string() && value.get<std::string>() == "inf") {
      *out = std::numeric_limits<double>::infinity();
      return true;
    }
  }
  return false;
}

// A run's sampler and schedule with the settings the case records: steps, CFG scale, the run's eta
// (values.runs[*].eta), s_noise / s_churn / s_tmin / s_tmax, quantize and the UniPC options (config.uni_pc).
::testing::AssertionResult RunSettings(const testing::FixtureCase& c, const nlohmann::json& run,
                                       engine::SamplingSettings& settings) {
  auto choice = engine::ResolveSampler(run["sampler"].get<std::string>(), run["schedule_type"].get<std::string>());
  if (!choice.ok()) return ::testing::AssertionFailure() << choice.status();
  const nlohmann::json& config = c.json["config"];
  settings.choice = *choice;
  settings.steps = config["steps"];
  settings.cfg_scale = config["cfg_scale"];
  if (run.contains("eta") && run["eta"].is_number()) settings.eta = run["eta"].get<double>();
  double value = 0;
  if (CaseOption(c, "s_noise", &value)) settings.s_noise = value;
  if (CaseOption(c, "s_churn", &value)) settings.s_churn = value;
  if (CaseOption(c, "s_tmin", &value)) settings.s_tmin = value;
  if (CaseOption(c, "s_tmax", &value)) settings.s_tmax = std::isinf(value) ? 0 : value;  // 0 = infinity
  if (config.contains("quantize") && config["quantize"].is_boolean()) {
    settings.quantize = config["quantize"].get<bool>();
  }
  if (config.contains("uni_pc") && config["uni_pc"].is_object()) {
    const nlohmann::json& uni_pc = config["uni_pc"];
    if (uni_pc.contains("variant")) {
      const std::string variant = uni_pc["variant"];
      if (variant != "bh1" && variant != "bh2") return ::testing::AssertionFailure() << "UniPC variant " << variant;
      settings.unipc.bh2 = variant == "bh2";
    }
    if (uni_pc.contains("order")) settings.unipc.order = uni_pc["order"].get<int>();
    if (uni_pc.contains("lower_order_final")) {
      settings.unipc.lower_order_final = uni_pc["lower_order_final"].get<bool>();
    }
    if (uni_pc.contains("skip_type")) {
      const std::string skip = uni_pc["skip_type"];
      using Skip = engine::UniPcOptions::SkipType;
      if (skip == "time_uniform") {
        settings.unipc.skip_type = Skip::kTimeUniform;
      } else if (skip == "time_quadratic") {
        settings.unipc.skip_type = Skip::kTimeQuadratic;
      } else if (skip == "logSNR") {
        settings.unipc.skip_type = Skip::kLogSnr;
      } else {
        return ::testing::AssertionFailure() << "UniPC skip_type " << skip;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// The seed the case's noise was drawn with.
int64_t CaseSeed(const testing::FixtureCase& c) { return c.json["config"]["seed"].get<int64_t>(); }

// Hands out the recorded tensors in order and remembers what was asked.
struct Replay {
  at::Tensor noises;  // [K, 1, 4, h, w] or undefined
  at::Tensor like;    // a tensor of the latent's shape (x_init)
  int next = 0;
  std::vector<std::pair<double, double>> calls;
  engine::NoiseSampler Sampler() {
    return [this](double s, double s_next) {
      calls.emplace_back(s, s_next);
      if (!noises.defined() || next >= noises.size(0)) {
        ADD_FAILURE() << "the sampler drew more noise tensors than the reference (" << next + 1 << ")";
        return at::zeros_like(like);
      }
      return noises[next++];
    };
  }
};

TEST(SamplersTest, EverySamplerAndScheduleMatchesWebUi) {
  for (const auto& c : testing::CasesOf("samplers")) {
    SCOPED_TRACE(c.dir.string());
    TinyModel model = LoadTiny(c);
    ASSERT_TRUE(model.unet);
    int runs = 0;
    for (const auto& [key, run] : c.json["values"]["runs"].items()) {
      SCOPED_TRACE(key);
      const std::string prefix = run["tensor_prefix"];
      engine::SamplingSettings settings;
      ASSERT_TRUE(RunSettings(c, run, settings));

      Replay replay;
      replay.like = c.io.at("x_init");
      if (!run["noises_tensor"].is_null()) replay.noises = c.io.at(run["noises_tensor"].get<std::string>());
      engine::SamplingInputs in;
      in.model = model.Eps();
      in.conditioning = OnePrompt(c);
      in.noise = c.io.at("x_init");
      in.step_noise = replay.Sampler();
      in.brownian_noise = [&](double, double) { return replay.Sampler(); };
      in.seeds = {static_cast<uint64_t>(CaseSeed(c))};
      int reported = 0;
      std::vector<at::Tensor> preview_x, preview_denoised;
      in.progress = [&](const engine::SamplingProgress& p) {
        ++reported;
        preview_x.push_back(p.x->clone());
        preview_denoised.push_back(p.denoised->clone());
      };
      model.calls = 0;
      auto result = engine::Sample(settings, *model.schedule, std::move(in));
      ASSERT_TRUE(result.ok()) << result.status();
      ++runs;

      const double atol = run["tolerance"]["atol"], rtol = run["tolerance"]["rtol"];
      if (c.io.count(prefix + ".sigmas")) {
        EXPECT_TRUE(AllClose(result->sigmas, c.io.at(prefix + ".sigmas"), 1e-6, 1e-5, prefix + ".sigmas"));
      }
      if (c.io.count(prefix + ".timesteps")) {
        const at::Tensor want = c.io.at(prefix + ".timesteps");
        ASSERT_EQ(static_cast<int64_t>(result->timesteps.size()), want.numel());
        for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(result->timesteps[i], want[i].item<int64_t>());
      }
      EXPECT_TRUE(AllClose(result->latent, c.io.at(prefix + ".final"), atol, rtol, prefix + ".final"));
      EXPECT_EQ(model.calls, run["unet_calls"].get<int>());
      EXPECT_EQ(result->model_calls, run["unet_calls"].get<int>());
      EXPECT_EQ(replay.next, run["noise_draws"].get<int>()) << "noise tensors drawn";
      EXPECT_EQ(reported, run["callback_steps"].get<int>());
      const auto& brownian = run["brownian_calls"];
      if (!brownian.empty()) {
        ASSERT_EQ(replay.calls.size(), brownian.size());
        for (size_t k = 0; k < brownian.size(); ++k) {
          EXPECT_NEAR(replay.calls[k].first, brownian[k][0].get<double>(), 1e-5);
          EXPECT_NEAR(replay.calls[k].second, brownian[k][1].get<double>(), 1e-5);
        }
      }
      if (c.io.count(prefix + ".preview_x")) {
        ASSERT_EQ(preview_x.size(), static_cast<size_t>(c.io.at(prefix + ".preview_x").size(0)));
        for (size_t k = 0; k < preview_x.size(); ++k) {
          EXPECT_TRUE(AllClose(preview_x[k], c.io.at(prefix + ".preview_x")[k], atol, rtol, prefix + ".preview_x"));
          EXPECT_TRUE(AllClose(preview_denoised[k], c.io.at(prefix + ".preview_denoised")[k], atol, rtol,
                               prefix + ".preview_denoised"));
        }
      }
    }
    EXPECT_EQ(runs, static_cast<int>(c.json["values"]["runs"].size()));
  }
}

// The same runs with the noise drawn live: the seed's CPU generator gives x_init, and its continuation is what
// the ancestral samplers add (WebUI's ImageRNG), so no recorded tensor is needed. Every run whose random tensors
// are all draws of that generator (noise_kind ["randn_like"]) is checked.
TEST(SamplersTest, SeededCpuGeneratorReproducesTheAncestralRuns) {
  for (const auto& c : testing::CasesOf("samplers")) {
    SCOPED_TRACE(c.dir.string());
    TinyModel model = LoadTiny(c);
    ASSERT_TRUE(model.unet);
    const at::Tensor x_init = c.io.at("x_init");
    int checked = 0;
    for (const auto& [key, run] : c.json["values"]["runs"].items()) {
      if (run["noise_kind"] != nlohmann::json::array({"randn_like"})) continue;
      SCOPED_TRACE(key);
      engine::NoiseOptions noise;
      noise.shape = x_init[0].sizes().vec();  // one image: [C, H/8, W/8]
      noise.seeds = {CaseSeed(c)};
      noise.source = engine::NoiseSource::kCpu;
      auto rng = engine::ImageRng::Create(noise);
      ASSERT_TRUE(rng.ok()) << rng.status();
      auto first = rng->First();
      ASSERT_TRUE(first.ok());
      EXPECT_TRUE(at::equal(*first, x_init));

      engine::SamplingSettings settings;
      ASSERT_TRUE(RunSettings(c, run, settings));
      engine::SamplingInputs in;
      in.model = model.Eps();
      in.conditioning = OnePrompt(c);
      in.noise = *first;
      in.step_noise = engine::StepNoiseFrom(&*rng);
      auto result = engine::Sample(settings, *model.schedule, std::move(in));
      ASSERT_TRUE(result.ok()) << result.status();
      const std::string prefix = run["tensor_prefix"];
      EXPECT_TRUE(AllClose(result->latent, c.io.at(prefix + ".final"), run["tolerance"]["atol"].get<double>(),
                           run["tolerance"]["rtol"].get<double>(), prefix + ".final (live noise)"));
      ++checked;
    }
    EXPECT_GT(checked, 0) << "no run with noise_kind [\"randn_like\"] in " << c.dir / "case.json";
  }
}

TEST(SamplersTest, CfgBatchLayoutAndSingleEvaluationsMatchWebUi) {
  for (const auto& c : testing::CasesOf("samplers")) {
    SCOPED_TRACE(c.dir.string());
    TinyModel model = LoadTiny(c);
    ASSERT_TRUE(model.unet);
    // The first UNet call of DPM++ 2M Karras: rows [cond, uncond], x * c_in, fractional t.
    at::Tensor first_x, first_t, first_eps;
    engine::EpsModel spy = [&](engine::ModelCall& call) {
      const at::Tensor& x = call.x;
      const at::Tensor& t = call.timesteps;
      const at::Tensor& ctx = call.context;
      auto eps = model.unet->Forward(x, t, ctx);
      if (!first_x.defined() && eps.ok()) {
        first_x = x.clone();
        first_t = t.clone();
        first_eps = eps->clone();
        EXPECT_TRUE(at::equal(ctx[0], c.io.at("cond")[0])) << "conditional row first";
        EXPECT_TRUE(at::equal(ctx[1], c.io.at("uncond")[0]));
      }
      return eps;
    };
    engine::CfgDenoiserOptions options;
    options.cfg_scale = c.json["config"]["cfg_scale"];
    engine::CfgDenoiser denoiser(spy, model.schedule.get(), OnePrompt(c), options);
    auto choice = engine::ResolveSampler("DPM++ 2M", "Karras");
    ASSERT_TRUE(choice.ok());
    engine::SamplingSettings settings;
    settings.choice = *choice;
    settings.steps = c.json["config"]["steps"];
    auto sigmas = engine::SamplerSigmas(settings, *model.schedule);
    ASSERT_TRUE(sigmas.ok()) << sigmas.status();
    const double sigma0 = (*sigmas)[0].item<double>();
    denoiser.Denoise(c.io.at("x_init") * sigma0, sigma0);
    EXPECT_TRUE(AllClose(first_x, c.io.at("cfg_call0.unet_x"), 1e-5, 1e-5, "unet_x"));
    EXPECT_TRUE(AllClose(first_t, c.io.at("cfg_call0.unet_t"), 1e-3, 1e-5, "unet_t"));
    EXPECT_TRUE(AllClose(first_eps, c.io.at("cfg_call0.unet_eps"), 1e-4, 1e-4, "unet_eps"));

    const at::Tensor x = c.io.at("cfg_single.x");
    const at::Tensor s = c.io.at("cfg_single.sigmas");
    for (int64_t k = 0; k < s.numel(); ++k) {
      // x0 = x - sigma * eps: the UNet's float-order error (a few 1e-6 in eps) grows with sigma (up to 14.6).
      const double sigma = s[k].item<double>();
      const at::Tensor got = denoiser.Denoise(x, sigma);
      EXPECT_TRUE(AllClose(got, c.io.at("cfg_single.denoised")[k], c.atol * std::max(1.0, sigma), c.rtol,
                           "cfg_single.denoised"));
    }
  }
}

}  // namespace
}  // namespace atelier
