// Sigma schedules: the model's sigmas and sigma <-> t conversions (k-diffusion DiscreteSchedule), every WebUI
// "Schedule type" for several step counts with and without discarding the next-to-last sigma, the dev-branch Beta
// schedule, WebUI's LCM schedule, and the schedules real samplers got; names, labels and aliases parse.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/sampling/model_schedule.h"
#include "engine/sampling/schedulers.h"
#include "engine/io/tensor_file.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

using engine::ModelSchedule;
using engine::ScheduleOptions;
using engine::Scheduler;
using testing::AllClose;

std::vector<testing::FixtureCase> SigmaCases() { return testing::CasesOf("sigmas"); }

// The LDM schedule a sigmas case was computed for (config.linear_start / linear_end / timesteps).
engine::ScheduleConfig ScheduleConfigOf(const testing::FixtureCase& c) {
  const auto& config = c.json["config"];
  engine::ScheduleConfig schedule;
  schedule.linear_start = config["linear_start"].get<double>();
  schedule.linear_end = config["linear_end"].get<double>();
  schedule.timesteps = config["timesteps"].get<int>();
  return schedule;
}

// The schedule options a sigmas case was computed with: the Beta distribution's parameters, the Karras and
// Polyexponential rho, and config.overrides (sigma_min / sigma_max / rho), if any.
ScheduleOptions ScheduleOptionsOf(const testing::FixtureCase& c, Scheduler scheduler) {
  const auto& config = c.json["config"];
  ScheduleOptions options;
  if (config.contains("beta_dist_alpha")) options.beta_alpha = config["beta_dist_alpha"].get<double>();
  if (config.contains("beta_dist_beta")) options.beta_beta = config["beta_dist_beta"].get<double>();
  if (scheduler == Scheduler::kKarras && config.contains("karras_rho")) {
    options.rho = config["karras_rho"].get<double>();
  }
  if (scheduler == Scheduler::kPolyexponential && config.contains("polyexponential_rho")) {
    options.rho = config["polyexponential_rho"].get<double>();
  }
  if (config.contains("overrides") && config["overrides"].is_object()) {
    const auto& overrides = config["overrides"];
    if (overrides.contains("sigma_min")) options.sigma_min = overrides["sigma_min"].get<double>();
    if (overrides.contains("sigma_max")) options.sigma_max = overrides["sigma_max"].get<double>();
    if (overrides.contains("rho")) options.rho = overrides["rho"].get<double>();
  }
  return options;
}

// "<Label with _ for space>.n<N>[.discard]" (also "Beta_dev.n<N>").
struct ScheduleKey {
  Scheduler scheduler = Scheduler::kAutomatic;
  int steps = 0;
  bool discard = false;
};

ScheduleKey ParseKey(const std::string& tensor_name) {
  const std::vector<std::string> parts = absl::StrSplit(tensor_name, '.');
  ScheduleKey key;
  EXPECT_TRUE(parts.size() == 2 || (parts.size() == 3 && parts[2] == "discard")) << tensor_name;
  auto scheduler = engine::ParseScheduler(absl::StrReplaceAll(parts[0], {{"_", " "}}));
  EXPECT_TRUE(scheduler.ok()) << tensor_name << ": " << scheduler.status();
  if (scheduler.ok()) key.scheduler = *scheduler;
  EXPECT_TRUE(parts.size() >= 2 && absl::StartsWith(parts[1], "n") && absl::SimpleAtoi(parts[1].substr(1), &key.steps))
      << tensor_name;
  key.discard = parts.size() == 3;
  return key;
}

void ExpectSchedule(const at::Tensor& got, const at::Tensor& want, double atol, double rtol, const std::string& label) {
  EXPECT_EQ(got.scalar_type(), at::kFloat) << label;
  EXPECT_TRUE(got.device().is_cpu()) << label;
  ASSERT_EQ(got.sizes(), want.sizes()) << label << ": got " << got << " want " << want;
  EXPECT_TRUE(AllClose(got, want, atol, rtol, label));
}

TEST(SigmaScheduleTest, ModelSigmasMatchCompVisDenoiser) {
  for (const auto& c : SigmaCases()) {
    SCOPED_TRACE(c.dir.string());
    const at::Tensor alphas = c.io.at("alphas_cumprod");
    // The fixture's alphas_cumprod is the scaled-linear schedule of its config, as the checkpoint loader computes it.
    EXPECT_TRUE(AllClose(engine::ComputeAlphasCumprod(ScheduleConfigOf(c)), alphas, 0, 1e-7, "alphas_cumprod"));
    const ModelSchedule model(alphas);
    EXPECT_FALSE(model.is_lcm());
    EXPECT_TRUE(at::equal(model.alphas_cumprod(), alphas));
    EXPECT_TRUE(AllClose(model.sigmas(), c.io.at("model_sigmas"), c.atol, c.rtol, "model_sigmas"));
    EXPECT_TRUE(AllClose(model.log_sigmas(), c.io.at("model_log_sigmas"), c.atol, c.rtol, "model_log_sigmas"));
    const auto& values = c.json["values"];
    EXPECT_NEAR(model.sigma_min(), values["model_sigma_min"].get<double>(), 1e-9);
    EXPECT_NEAR(model.sigma_max(), values["model_sigma_max"].get<double>(), 1e-7);
  }
}

TEST(SigmaScheduleTest, ConversionsMatchDiscreteSchedule) {
  for (const auto& c : SigmaCases()) {
    SCOPED_TRACE(c.dir.string());
    const ModelSchedule model(c.io.at("alphas_cumprod"));
    const int64_t last_t = c.json["config"]["timesteps"].get<int64_t>() - 1;  // 999
    const at::Tensor sigma = c.io.at("conv.sigma"), t = c.io.at("conv.t");
    const at::Tensor t_cont = model.SigmaToT(sigma);
    EXPECT_EQ(t_cont.scalar_type(), at::kFloat);
    EXPECT_TRUE(AllClose(t_cont, c.io.at("conv.sigma_to_t"), c.atol, c.rtol, "conv.sigma_to_t"));
    const at::Tensor t_quant = model.SigmaToT(sigma, /*quantize=*/true);
    EXPECT_EQ(t_quant.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(t_quant, c.io.at("conv.sigma_to_t_quantized"))) << t_quant;
    EXPECT_TRUE(AllClose(model.TToSigma(t), c.io.at("conv.t_to_sigma"), c.atol, c.rtol, "conv.t_to_sigma"));

    // The scalar versions agree with the tensor ones, on the fixture's values and on a sweep over the whole range
    // (every model sigma, the midpoints between them, and values outside [sigma_min, sigma_max]).
    const at::Tensor s = model.sigmas();
    const at::Tensor mids = ((s.slice(0, 1) + s.slice(0, 0, -1)) / 2);
    const at::Tensor sweep = at::cat({sigma, s, mids, at::tensor({0.01f, 0.02f, 20.0f, 100.0f})});
    const at::Tensor sweep_t = model.SigmaToT(sweep), sweep_q = model.SigmaToT(sweep, true);
    const at::Tensor t_sweep = at::cat({t, at::linspace(0, last_t, 2 * last_t + 1, at::kFloat)});
    const at::Tensor t_sweep_sigma = model.TToSigma(t_sweep);
    std::vector<double> scalar_t, scalar_q, scalar_sigma;
    for (int64_t i = 0; i < sweep.numel(); ++i) {
      scalar_t.push_back(model.SigmaToT(sweep[i].item<double>()));
      scalar_q.push_back(model.SigmaToT(sweep[i].item<double>(), true));
    }
    for (int64_t i = 0; i < t_sweep.numel(); ++i) scalar_sigma.push_back(model.TToSigma(t_sweep[i].item<double>()));
    EXPECT_TRUE(AllClose(at::tensor(scalar_t, at::kDouble), sweep_t.to(at::kDouble), 1e-4, 1e-6, "scalar SigmaToT"));
    EXPECT_TRUE(at::equal(at::tensor(scalar_q, at::kDouble), sweep_q.to(at::kDouble))) << "scalar quantized SigmaToT";
    EXPECT_TRUE(AllClose(at::tensor(scalar_sigma, at::kDouble), t_sweep_sigma.to(at::kDouble), 0, 1e-6,
                         "scalar TToSigma"));
    // Round trip at the model's own sigmas: index i.
    EXPECT_DOUBLE_EQ(model.SigmaToT(model.sigma_max()), static_cast<double>(last_t));
    EXPECT_DOUBLE_EQ(model.SigmaToT(model.sigma_min()), 0.0);
  }
}

TEST(SchedulersTest, EveryScheduleTypeMatchesWebUi) {
  for (const auto& c : SigmaCases()) {
    SCOPED_TRACE(c.dir.string());
    const ModelSchedule model(c.io.at("alphas_cumprod"));
    const auto& names = c.json["values"]["schedules"];
    // Every schedule type for every step count of values.n_values, with and without discarding (120 in the public
    // case).
    const size_t step_counts = c.json["values"]["n_values"].size();
    ASSERT_GT(step_counts, 0u);
    ASSERT_EQ(names.size(), engine::AllSchedulers().size() * step_counts * 2);
    std::set<Scheduler> seen;
    for (const auto& name_json : names) {
      const std::string name = name_json.get<std::string>();
      const ScheduleKey key = ParseKey(name);
      seen.insert(key.scheduler);
      ScheduleOptions options = ScheduleOptionsOf(c, key.scheduler);
      options.discard_next_to_last_sigma = key.discard;
      auto sigmas = engine::BuildSigmas(key.scheduler, key.steps, model, options);
      ASSERT_TRUE(sigmas.ok()) << name << ": " << sigmas.status();
      ExpectSchedule(*sigmas, c.io.at(name), c.atol, c.rtol, name);
    }
    EXPECT_EQ(seen.size(), engine::AllSchedulers().size());
  }
}

TEST(SchedulersTest, DevBranchBetaMatchesWebUi) {
  for (const auto& c : SigmaCases()) {
    SCOPED_TRACE(c.dir.string());
    const ModelSchedule model(c.io.at("alphas_cumprod"));
    int compared = 0;
    for (const auto& [name, want] : c.io) {
      if (!absl::StartsWith(name, "Beta_dev.")) continue;
      int steps = 0;
      ASSERT_TRUE(absl::SimpleAtoi(name.substr(std::string("Beta_dev.n").size()), &steps)) << name;
      ScheduleOptions options = ScheduleOptionsOf(c, Scheduler::kBeta);
      options.beta_dev = true;
      auto sigmas = engine::BuildSigmas(Scheduler::kBeta, steps, model, options);
      ASSERT_TRUE(sigmas.ok()) << sigmas.status();
      ExpectSchedule(*sigmas, want, c.atol, c.rtol, name);
      // The two Beta versions really differ (so this test tells them apart).
      if (steps > 2) {
        EXPECT_FALSE(at::allclose(*sigmas, c.io.at("Beta.n" + std::to_string(steps)))) << name;
      }
      ++compared;
    }
    EXPECT_EQ(compared, static_cast<int>(c.json["values"]["n_values"].size()));  // one per step count
  }
}

TEST(SchedulersTest, OverridesAndOptions) {
  const ModelSchedule model(engine::ComputeAlphasCumprod(engine::ScheduleConfig{}));
  ScheduleOptions o;
  auto karras = engine::BuildSigmas(Scheduler::kKarras, 10, model, o);
  ASSERT_TRUE(karras.ok());
  EXPECT_FLOAT_EQ((*karras)[0].item<float>(), static_cast<float>(model.sigma_max()));
  EXPECT_FLOAT_EQ((*karras)[9].item<float>(), static_cast<float>(model.sigma_min()));
  EXPECT_EQ((*karras)[10].item<float>(), 0.0f);

  o.sigma_min = 0.5;
  o.sigma_max = 8;
  o.rho = 3;
  auto overridden = engine::BuildSigmas(Scheduler::kKarras, 10, model, o);
  ASSERT_TRUE(overridden.ok());
  EXPECT_FLOAT_EQ((*overridden)[0].item<float>(), 8.0f);
  EXPECT_FLOAT_EQ((*overridden)[9].item<float>(), 0.5f);
  // rho 3: the midpoint of the ramp is ((8^(1/3) + 0.5^(1/3)) / 2)^3.
  auto odd = engine::BuildSigmas(Scheduler::kKarras, 3, model, o);
  ASSERT_TRUE(odd.ok());
  EXPECT_NEAR((*odd)[1].item<float>(), std::pow((2.0 + std::cbrt(0.5)) / 2, 3), 1e-5);

  ScheduleOptions old;
  old.use_old_karras_scheduler_sigmas = true;
  auto exp = engine::BuildSigmas(Scheduler::kExponential, 4, model, old);
  ASSERT_TRUE(exp.ok());
  EXPECT_FLOAT_EQ((*exp)[0].item<float>(), 10.0f);
  EXPECT_FLOAT_EQ((*exp)[3].item<float>(), 0.1f);
  // The uniform schedule ignores sigma overrides (it is the model's own get_sigmas).
  auto uniform = engine::BuildSigmas(Scheduler::kUniform, 4, model, o);
  ASSERT_TRUE(uniform.ok());
  EXPECT_TRUE(at::equal(*uniform, model.UniformSigmas(4)));

  // Align Your Steps with its own length is the list itself.
  auto ays = engine::BuildSigmas(Scheduler::kAlignYourSteps, 11, model, {});
  ASSERT_TRUE(ays.ok());
  EXPECT_EQ(ays->numel(), 12);
  EXPECT_FLOAT_EQ((*ays)[1].item<float>(), 6.475f);
  EXPECT_FLOAT_EQ((*ays)[10].item<float>(), 0.029f);
}

TEST(SchedulersTest, InvalidArgumentsAreErrors) {
  const ModelSchedule model(engine::ComputeAlphasCumprod(engine::ScheduleConfig{}));
  for (int steps : {0, -3}) {
    auto sigmas = engine::BuildSigmas(Scheduler::kKarras, steps, model, {});
    EXPECT_EQ(sigmas.status().code(), absl::StatusCode::kInvalidArgument) << steps;
  }
  ScheduleOptions bad_beta;
  bad_beta.beta_alpha = 0;
  EXPECT_EQ(engine::BuildSigmas(Scheduler::kBeta, 5, model, bad_beta).status().code(),
            absl::StatusCode::kInvalidArgument);
  ScheduleOptions negative;
  negative.sigma_min = -1;
  EXPECT_EQ(engine::BuildSigmas(Scheduler::kKarras, 5, model, negative).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(engine::BuildSigmas(Scheduler::kKarras, 1, model, {}).ok());
}

// The samplers fixture runs on the tiny model's alphas_cumprod (its checkpoint is named by config.weights).
at::Tensor SamplerAlphas(const testing::FixtureCase& c) {
  const auto weights = testing::ReadWeights(c, "alphas_cumprod");
  EXPECT_TRUE(weights.count("")) << "no alphas_cumprod in " << testing::WeightsFile(c);
  return weights.count("") ? weights.at("") : at::Tensor();
}

TEST(SchedulersTest, LcmScheduleMatchesWebUi) {
  for (const auto& c : testing::CasesOf("samplers")) {
    SCOPED_TRACE(c.dir.string());
    const at::Tensor alphas = SamplerAlphas(c);
    ASSERT_TRUE(alphas.defined());
    EXPECT_TRUE(AllClose(engine::ComputeAlphasCumprod(engine::ScheduleConfig{}), alphas, 0, 1e-7, "alphas_cumprod"));
    const ModelSchedule lcm = ModelSchedule::Lcm(alphas);
    ASSERT_TRUE(lcm.is_lcm());
    EXPECT_EQ(lcm.skip_steps(), 20);
    EXPECT_EQ(lcm.sigmas().numel(), 50);
    EXPECT_EQ(lcm.alphas_cumprod().numel(), 1000);
    const ModelSchedule full(alphas);
    // Its sigmas are the model's at t = 19, 39, ..., 999.
    EXPECT_TRUE(at::equal(lcm.sigmas(), full.sigmas().slice(0, 19, 1000, 20)));
    const int steps = c.json["values"]["steps"];
    ExpectSchedule(lcm.UniformSigmas(steps), c.io.at("LCM.Automatic.sigmas"), 1e-6, 1e-5, "LCM.Automatic.sigmas");
    auto karras = engine::BuildSigmas(Scheduler::kKarras, steps, lcm, {});
    ASSERT_TRUE(karras.ok());
    ExpectSchedule(*karras, c.io.at("LCM.Karras.sigmas"), 1e-6, 1e-5, "LCM.Karras.sigmas");
    // The LCM schedule differs from the full model's (so the test tells them apart).
    EXPECT_FALSE(at::allclose(lcm.UniformSigmas(steps), full.UniformSigmas(steps)));

    // LCM's sigma_to_t is quantized onto its 50 timesteps: t = 20 i + 19, whatever `quantize` says.
    const at::Tensor t = lcm.SigmaToT(lcm.sigmas());
    EXPECT_EQ(t.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(t, at::arange(19, 1000, 20, at::kLong)));
    EXPECT_EQ(lcm.SigmaToT(lcm.sigma_max()), 999.0);
    EXPECT_EQ(lcm.SigmaToT(lcm.sigma_min()), 19.0);
    EXPECT_EQ(lcm.SigmaToT(full.sigmas()[500].item<double>()), 499.0);  // nearest of 499 and 519
    EXPECT_TRUE(AllClose(lcm.TToSigma(t.to(at::kFloat)), lcm.sigmas(), 0, 1e-6, "LCM t_to_sigma"));
    EXPECT_NEAR(lcm.TToSigma(999.0), lcm.sigma_max(), 1e-5);
    EXPECT_NEAR(lcm.TToSigma(0.0), lcm.sigma_min(), 1e-7);  // clamped to index 0
  }
}

TEST(SchedulersTest, SamplerSchedulesMatchWebUi) {
  for (const auto& c : testing::CasesOf("samplers")) {
    SCOPED_TRACE(c.dir.string());
    const at::Tensor alphas = SamplerAlphas(c);
    ASSERT_TRUE(alphas.defined());
    const ModelSchedule model(alphas);
    const int steps = c.json["values"]["steps"];
    const auto& sampler_options = c.json["values"]["sampler_options"];
    int compared = 0, expected = 0;
    for (const auto& [run_name, run] : c.json["values"]["runs"].items()) {
      const std::string sampler = run["sampler"];
      if (sampler == "LCM" || sampler == "DPM fast" || sampler == "DPM adaptive") continue;
      if (!run["resolved_scheduler"].is_null()) ++expected;  // a k-diffusion run: its schedule is recorded
      const std::string tensor = run["tensor_prefix"].get<std::string>() + ".sigmas";
      if (c.io.count(tensor) == 0) continue;  // timestep samplers
      std::string resolved = run["resolved_scheduler"].is_null() ? "" : run["resolved_scheduler"].get<std::string>();
      if (resolved == "model get_sigmas") resolved = "uniform";
      auto scheduler = engine::ParseScheduler(resolved);
      ASSERT_TRUE(scheduler.ok()) << run_name << ": " << scheduler.status();
      ScheduleOptions options;
      // WebUI's samplers that discard the next-to-last sigma (DPM2, DPM2 a, DPM++ 3M SDE): values.sampler_options.
      ASSERT_TRUE(sampler_options.contains(sampler)) << run_name;
      options.discard_next_to_last_sigma = sampler_options[sampler].value("discard_next_to_last_sigma", false);
      auto sigmas = engine::BuildSigmas(*scheduler, steps, model, options);
      ASSERT_TRUE(sigmas.ok()) << sigmas.status();
      ExpectSchedule(*sigmas, c.io.at(tensor), 1e-6, 1e-5, tensor);
      ++compared;
    }
    EXPECT_EQ(compared, expected);  // every k-diffusion run's schedule (26 in the public case)
    EXPECT_GT(compared, 0) << "no k-diffusion run with a recorded schedule in " << c.dir / "case.json";
  }
}

TEST(SchedulerNamesTest, NamesLabelsAndAliasParse) {
  const std::vector<std::pair<Scheduler, std::vector<std::string>>> expected = {
      {Scheduler::kAutomatic, {"automatic", "Automatic"}},
      {Scheduler::kUniform, {"uniform", "Uniform"}},
      {Scheduler::kKarras, {"karras", "Karras", "KARRAS"}},
      {Scheduler::kExponential, {"exponential", "Exponential"}},
      {Scheduler::kPolyexponential, {"polyexponential", "Polyexponential"}},
      {Scheduler::kSgmUniform, {"sgm_uniform", "SGM Uniform", "SGMUniform", "sgmuniform", "sgm uniform"}},
      {Scheduler::kKlOptimal, {"kl_optimal", "KL Optimal", "kl optimal"}},
      {Scheduler::kAlignYourSteps, {"align_your_steps", "Align Your Steps", "ALIGN YOUR STEPS"}},
      {Scheduler::kSimple, {"simple", "Simple"}},
      {Scheduler::kNormal, {"normal", "Normal"}},
      {Scheduler::kDdim, {"ddim", "DDIM", "Ddim"}},
      {Scheduler::kBeta, {"beta", "Beta"}},
  };
  ASSERT_EQ(engine::AllSchedulers().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& [scheduler, spellings] = expected[i];
    EXPECT_EQ(engine::AllSchedulers()[i].scheduler, scheduler);  // WebUI's order
    for (const std::string& s : spellings) {
      auto parsed = engine::ParseScheduler(s);
      ASSERT_TRUE(parsed.ok()) << s << ": " << parsed.status();
      EXPECT_EQ(*parsed, scheduler) << s;
    }
    EXPECT_EQ(engine::ParseScheduler(engine::SchedulerName(scheduler)).value(), scheduler);
    EXPECT_EQ(engine::ParseScheduler(engine::SchedulerLabel(scheduler)).value(), scheduler);
  }
  EXPECT_STREQ(engine::SchedulerName(Scheduler::kSgmUniform), "sgm_uniform");
  EXPECT_STREQ(engine::SchedulerLabel(Scheduler::kSgmUniform), "SGM Uniform");
  EXPECT_STREQ(engine::SchedulerInfoOf(Scheduler::kSgmUniform).alias, "SGMUniform");
  EXPECT_STREQ(engine::SchedulerLabel(Scheduler::kKlOptimal), "KL Optimal");
  EXPECT_STREQ(engine::SchedulerName(Scheduler::kAlignYourSteps), "align_your_steps");
  EXPECT_EQ(engine::SchedulerInfoOf(Scheduler::kKarras).default_rho, 7.0);
  EXPECT_EQ(engine::SchedulerInfoOf(Scheduler::kPolyexponential).default_rho, 1.0);
  EXPECT_EQ(engine::SchedulerInfoOf(Scheduler::kExponential).default_rho, -1.0);
  EXPECT_TRUE(engine::SchedulerInfoOf(Scheduler::kBeta).need_inner_model);
  EXPECT_FALSE(engine::SchedulerInfoOf(Scheduler::kKarras).need_inner_model);
}

TEST(SchedulerNamesTest, UnknownNameListsLabels) {
  for (const std::string bad : {"", "karras2", "sgm-uniform", "DPM++ 2M Karras", "turbo"}) {
    auto parsed = engine::ParseScheduler(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(parsed.status().message());
    EXPECT_TRUE(absl::StrContains(message, "\"" + bad + "\"")) << message;
    for (const auto& info : engine::AllSchedulers()) EXPECT_TRUE(absl::StrContains(message, info.label)) << message;
  }
}

}  // namespace
}  // namespace atelier
