// Sampling behaviour beyond the per-sampler goldens: WebUI's sampler table and name resolution, the txt2img and
// img2img starts (txt2img-tiny / img2img-tiny at the latent level), batches equal single images, AND weights,
// interruption returning the last x0, plugin hook points, the NaN stop, the Brownian tree and bad settings.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>

#include <ATen/ATen.h>

#include "engine/sampling/brownian_tree.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/sampling/samplers.h"
#include "engine/models/unet.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "test_support.h"

namespace atelier {
namespace {

using engine::CfgConditioning;
using engine::Scheduler;
using engine::ScheduledCond;
using engine::WeightedCond;
using testing::AllClose;

struct Tiny {
  testing::FixtureCase c;
  std::unique_ptr<engine::UNet> unet;
  std::unique_ptr<engine::ModelSchedule> schedule;

  engine::EpsModel Eps() const {
    return [this](engine::ModelCall& call) {
      const at::Tensor& x = call.x;
      const at::Tensor& t = call.timesteps;
      const at::Tensor& ctx = call.context;
      return unet->Forward(x, t, ctx);
    };
  }
  CfgConditioning Conditioning(int images = 1) const {
    CfgConditioning cond;
    for (int i = 0; i < images; ++i) {
      cond.cond.push_back({WeightedCond{ScheduledCond::Fixed(c.io.at("cond")[0]), 1.0}});
      cond.uncond.push_back(ScheduledCond::Fixed(c.io.at("uncond")[0]));
    }
    return cond;
  }
};

// A case with the tiny UNet and the cond/uncond inputs (txt2img-tiny, img2img-tiny, samplers).
std::unique_ptr<Tiny> LoadTiny(const testing::FixtureCase& c) {
  auto t = std::make_unique<Tiny>();
  t->c = c;
  auto unet = engine::UNet::Create(testing::UNetConfigOf(t->c.json["config"]["unet"]),
                                   testing::ReadWeights(t->c, "model.diffusion_model."));
  EXPECT_TRUE(unet.ok()) << unet.status();
  if (!unet.ok()) return nullptr;
  t->unet = *std::move(unet);
  t->schedule = std::make_unique<engine::ModelSchedule>(testing::ReadWeights(t->c, "alphas_cumprod").at(""));
  return t;
}

// The first case of kind `name`; null, and a test failure naming the fixtures folder, when there is none.
std::unique_ptr<Tiny> LoadTiny(const std::string& name) {
  const auto cases = testing::CasesOf(name);
  return cases.empty() ? nullptr : LoadTiny(cases.front());
}

engine::SamplingSettings Settings(const std::string& sampler, const std::string& scheduler, int steps = 6) {
  engine::SamplingSettings s;
  auto choice = engine::ResolveSampler(sampler, scheduler);
  EXPECT_TRUE(choice.ok()) << choice.status();
  if (choice.ok()) s.choice = *choice;
  s.steps = steps;
  s.cfg_scale = 7;
  return s;
}

// Zeros of the latent's shape for every noise draw.
engine::NoiseSampler Zeros(const at::Tensor& like) {
  return [like](double, double) { return at::zeros_like(like); };
}

// The random draws a case recorded inside its sampler ("sampler_noises" [K, images, 4, h, w]) in call order; zeros
// when it recorded none (DPM++ 2M draws nothing).
engine::NoiseSampler Recorded(const testing::FixtureCase& c) {
  const at::Tensor like = c.io.at("noise");
  if (c.io.count("sampler_noises") == 0) return Zeros(like);
  const at::Tensor draws = c.io.at("sampler_noises");
  auto next = std::make_shared<int64_t>(0);
  return [draws, next, like](double, double) {
    if (*next >= draws.size(0)) {
      ADD_FAILURE() << "the sampler drew more noise tensors than the case recorded (" << draws.size(0) << ")";
      return at::zeros_like(like);
    }
    return at::Tensor(draws[(*next)++]);
  };
}

// The sampling settings a txt2img-tiny / img2img-tiny case records in its values: sampler, schedule type, steps,
// CFG scale, eta, and for img2img the denoising strength and img2img_fix_steps.
engine::SamplingSettings CaseSettings(const testing::FixtureCase& c) {
  const auto& v = c.json["values"];
  auto s = Settings(v["sampler"].get<std::string>(), v["schedule_type"].get<std::string>(), v["steps"].get<int>());
  s.cfg_scale = v["cfg_scale"].get<double>();
  if (v.contains("eta") && v["eta"].is_number()) s.eta = v["eta"].get<double>();
  if (v.contains("denoising_strength")) s.denoising_strength = v["denoising_strength"].get<double>();
  if (v.contains("img2img_fix_steps")) s.img2img_fix_steps = v["img2img_fix_steps"].get<bool>();
  return s;
}

TEST(SamplerTableTest, MatchesWebUisListAndOptions) {
  const auto& all = engine::AllSamplers();
  EXPECT_STREQ(all.front().name, "DPM++ 2M");  // WebUI's default sampler
  for (const auto& c : testing::CasesOf("samplers")) {
    SCOPED_TRACE(c.dir.string());
    const auto& values = c.json["values"];
    ASSERT_EQ(all.size(), values["sampler_options"].size());
    for (const auto& s : all) {
      SCOPED_TRACE(s.name);
      ASSERT_TRUE(values["sampler_options"].contains(s.name));
      const auto& o = values["sampler_options"][s.name];
      if (o.contains("scheduler")) {
        ASSERT_TRUE(s.default_scheduler.has_value());
        EXPECT_STREQ(engine::SchedulerName(*s.default_scheduler), o["scheduler"].get<std::string>().c_str());
      } else {
        EXPECT_FALSE(s.default_scheduler.has_value());
      }
      EXPECT_EQ(s.discard_next_to_last_sigma, o.value("discard_next_to_last_sigma", false));
      EXPECT_EQ(s.second_order, o.value("second_order", false));
      EXPECT_EQ(s.brownian_noise, o.value("brownian_noise", false));
      EXPECT_EQ(s.uses_ensd, o.value("uses_ensd", false));
    }
  }
  // WebUI's sampler_extra_params: s_noise reaches Euler, Heun, DPM2, DPM fast and the ancestral/SDE samplers that
  // list it, not Euler a or DPM adaptive; the churn settings only Euler, Heun and DPM2.
  auto info = [](const char* name) { return *engine::ResolveSampler(name, "")->sampler; };
  EXPECT_TRUE(info("Euler").takes_s_noise && info("Euler").takes_churn);
  EXPECT_TRUE(info("DPM++ SDE").takes_s_noise && !info("DPM++ SDE").takes_churn);
  EXPECT_TRUE(info("DPM fast").takes_s_noise);
  EXPECT_FALSE(info("Euler a").takes_s_noise);
  EXPECT_FALSE(info("DPM adaptive").takes_s_noise);
}

TEST(SamplerTableTest, ResolvesNamesAliasesAndLegacyCombinedNames) {
  struct Case {
    const char* sampler;
    const char* scheduler;
    const char* want_sampler;
    Scheduler want_scheduler;
  };
  const Case cases[] = {
      {"DPM++ 2M", "", "DPM++ 2M", Scheduler::kAutomatic},
      {"DPM++ 2M", "Karras", "DPM++ 2M", Scheduler::kAutomatic},  // the sampler's own default
      {"DPM++ 2M Karras", "", "DPM++ 2M", Scheduler::kAutomatic},
      {"DPM++ SDE Karras", "", "DPM++ SDE", Scheduler::kAutomatic},
      {"DPM++ 2M SDE Karras", "", "DPM++ 2M SDE", Scheduler::kKarras},
      {"DPM++ 2M SDE Exponential", "", "DPM++ 2M SDE", Scheduler::kAutomatic},
      {"DPM++ 2M SDE Heun", "", "DPM++ 2M SDE Heun", Scheduler::kAutomatic},
      {"Euler a", "", "Euler a", Scheduler::kAutomatic},
      {"euler A", "", "Euler a", Scheduler::kAutomatic},
      {"k_euler_ancestral", "", "Euler a", Scheduler::kAutomatic},
      {"Euler Karras", "", "Euler", Scheduler::kKarras},
      {"Euler", "sgm_uniform", "Euler", Scheduler::kSgmUniform},
      {"Euler", "SGMUniform", "Euler", Scheduler::kSgmUniform},
      {"DDIM", "", "DDIM", Scheduler::kAutomatic},
      {"", "", "DPM++ 2M", Scheduler::kAutomatic},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(std::string(k.sampler) + " / " + k.scheduler);
    auto got = engine::ResolveSampler(k.sampler, k.scheduler);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_STREQ(got->sampler->name, k.want_sampler);
    EXPECT_EQ(got->scheduler, k.want_scheduler);
  }
  auto bad = engine::ResolveSampler("Euler b", "");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"DPM++ 2M\""), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("\"UniPC\""), std::string::npos) << bad.status();
  auto bad_scheduler = engine::ResolveSampler("Euler", "Karas");
  ASSERT_EQ(bad_scheduler.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_scheduler.status().message().find("Karras"), std::string::npos) << bad_scheduler.status();
}

TEST(SamplingSettingsTest, BadValuesAreInvalidArgumentsNamingTheRange) {
  auto check = [](engine::SamplingSettings s, const std::string& needle) {
    const absl::Status st = engine::ValidateSamplingSettings(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << needle;
    EXPECT_NE(st.message().find(needle), std::string::npos) << st;
  };
  const auto good = Settings("Euler a", "");
  EXPECT_TRUE(engine::ValidateSamplingSettings(good).ok());
  auto s = good;
  s.steps = 0;
  check(s, "between 1 and 1000");
  s.steps = 1001;
  check(s, "between 1 and 1000");
  s = good;
  s.cfg_scale = std::nan("");
  check(s, "cfg_scale");
  s.cfg_scale = std::numeric_limits<double>::infinity();
  check(s, "cfg_scale");
  s = good;
  s.denoising_strength = -0.1;
  check(s, "between 0 and 1");
  s = good;
  s.eta = -1;
  check(s, "eta");
  s = good;
  s.s_noise = std::nan("");
  check(s, "s_noise");
}

// Every txt2img-tiny and img2img-tiny case with the settings it records (values): sampler, schedule type, steps,
// CFG scale, seed, eta and, for img2img, the denoising strength and the steps it runs.
TEST(SamplingTest, Txt2ImgAndImg2ImgLatentsMatchWebUi) {
  for (const char* name : {"txt2img-tiny", "img2img-tiny"}) {
    SCOPED_TRACE(name);
    for (const auto& case_ : testing::CasesOf(name)) {
      SCOPED_TRACE(case_.dir.string());
      auto tiny = LoadTiny(case_);
      ASSERT_TRUE(tiny);
      const auto& c = tiny->c;
      const auto& v = c.json["values"];
      const bool img2img = c.io.count("init_latent") > 0;
      const auto settings = CaseSettings(c);
      const int steps = v["steps"].get<int>();
      if (img2img && !settings.img2img_fix_steps) {
        // WebUI's t_enc = int(min(strength, 0.999) * steps) in float arithmetic: int(0.6 * 6) = 3.
        EXPECT_EQ(engine::Img2ImgSteps(settings), std::make_pair(steps, v["t_enc"].get<int>()));
      }
      engine::SamplingInputs in;
      in.model = tiny->Eps();
      in.conditioning = tiny->Conditioning();
      in.noise = c.io.at("noise");
      in.step_noise = Recorded(c);
      in.seeds = {v["seed"].get<uint64_t>()};
      if (img2img) in.init_latent = c.io.at("init_latent");
      auto result = engine::Sample(settings, *tiny->schedule, std::move(in));
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_TRUE(AllClose(result->sigmas, c.io.at(img2img ? "sigma_sched" : "sigmas"), 1e-6, 1e-5, "sigmas"));
      EXPECT_TRUE(AllClose(result->latent, c.io.at("final_latent"), c.atol, c.rtol, "final_latent"));
      // img2img runs t_enc + 1 of its steps (values.steps_run); txt2img all of them.
      EXPECT_EQ(result->reported_steps, v.contains("steps_run") ? v["steps_run"].get<int>() : steps);
    }
  }
}

TEST(SamplingTest, BatchEqualsSingleImagesAndAndWeightsAddUp) {
  auto tiny = LoadTiny("txt2img-tiny");
  ASSERT_TRUE(tiny);
  const at::Tensor n0 = tiny->c.io.at("noise");
  const at::Tensor n1 = n0.flip({3}) * 0.5;
  auto run = [&](CfgConditioning cond, at::Tensor noise) {
    engine::SamplingInputs in;
    in.model = tiny->Eps();
    in.conditioning = std::move(cond);
    in.noise = noise;
    in.step_noise = Zeros(noise);
    auto r = engine::Sample(Settings("DPM++ 2M", "Karras", 4), *tiny->schedule, std::move(in));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->latent : at::Tensor();
  };
  const at::Tensor a = run(tiny->Conditioning(1), n0);
  const at::Tensor b = run(tiny->Conditioning(1), n1);
  const at::Tensor both = run(tiny->Conditioning(2), at::cat({n0, n1}, 0));
  // Equal up to float summation order: the UNet at batch 4 blocks its GEMMs differently than at batch 2, and x0
  // errors are amplified by sigma (up to 14.6) and the CFG scale.
  EXPECT_TRUE(AllClose(both[0], a[0], 1e-3, 1e-4, "batch image 0"));
  EXPECT_TRUE(AllClose(both[1], b[0], 1e-3, 1e-4, "batch image 1"));
  EXPECT_FALSE(at::allclose(both[0], both[1]));

  // "p AND p" with weights 0.5 and 0.5 guides like "p" with weight 1; weight 2 guides differently.
  CfgConditioning halves = tiny->Conditioning(1);
  halves.cond[0] = {WeightedCond{ScheduledCond::Fixed(tiny->c.io.at("cond")[0]), 0.5},
                    WeightedCond{ScheduledCond::Fixed(tiny->c.io.at("cond")[0]), 0.5}};
  EXPECT_TRUE(AllClose(run(halves, n0), a, 1e-3, 1e-4, "AND halves"));  // batch 3 vs 2: float order
  CfgConditioning doubled = tiny->Conditioning(1);
  doubled.cond[0][0].weight = 2;
  EXPECT_FALSE(at::allclose(run(doubled, n0), a, 1e-3, 1e-3));
}

TEST(SamplingTest, InterruptReturnsTheLastX0AndStopsPromptly) {
  auto tiny = LoadTiny("txt2img-tiny");
  ASSERT_TRUE(tiny);
  std::atomic<bool> interrupt{false};
  at::Tensor preview_at_stop;
  int calls = 0;
  engine::SamplingInputs in;
  in.model = [&](engine::ModelCall& call) {
    const at::Tensor& x = call.x;
    const at::Tensor& t = call.timesteps;
    const at::Tensor& ctx = call.context;
    ++calls;
    return tiny->unet->Forward(x, t, ctx);
  };
  in.conditioning = tiny->Conditioning();
  in.noise = tiny->c.io.at("noise");
  in.step_noise = Zeros(tiny->c.io.at("noise"));
  in.interrupt = [&] { return interrupt.load(); };
  in.progress = [&](const engine::SamplingProgress& p) {
    if (p.step == 2) {
      interrupt = true;
      preview_at_stop = p.preview->clone();
    }
  };
  // Heun makes two model calls per step: the stop lands between them, before the step's second call.
  auto result = engine::Sample(Settings("Heun", "", 6), *tiny->schedule, std::move(in));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->interrupted);
  EXPECT_EQ(calls, 5);  // steps 0 and 1 (two calls each) and step 2's first call
  ASSERT_TRUE(preview_at_stop.defined());
  EXPECT_TRUE(at::equal(result->latent, preview_at_stop));
}

TEST(SamplingTest, NanFromTheModelStopsTheJobWithAClearError) {
  auto tiny = LoadTiny("txt2img-tiny");
  ASSERT_TRUE(tiny);
  int calls = 0;
  engine::SamplingInputs in;
  in.model = [&](engine::ModelCall& call) -> absl::StatusOr<at::Tensor> {
    const at::Tensor& x = call.x;
    const at::Tensor& t = call.timesteps;
    const at::Tensor& ctx = call.context;
    auto eps = tiny->unet->Forward(x, t, ctx);
    if (++calls != 3 || !eps.ok()) return eps;
    at::Tensor poisoned = eps->clone();  // the UNet returns inference tensors
    poisoned[0][0][0][0] = std::nan("");
    return poisoned;
  };
  in.conditioning = tiny->Conditioning();
  in.noise = tiny->c.io.at("noise");
  in.step_noise = Zeros(tiny->c.io.at("noise"));
  auto result = engine::Sample(Settings("Euler", "", 6), *tiny->schedule, std::move(in));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(result.status().message().find("NaN"), std::string::npos) << result.status();
  EXPECT_NE(result.status().message().find("evaluation 3"), std::string::npos) << result.status();
  EXPECT_EQ(calls, 3);

  // A failing model call is the job's error, unchanged.
  engine::SamplingInputs failing;
  failing.model = [](engine::ModelCall&) -> absl::StatusOr<at::Tensor> {
    return absl::ResourceExhaustedError("out of memory");
  };
  failing.conditioning = tiny->Conditioning();
  failing.noise = tiny->c.io.at("noise");
  failing.step_noise = Zeros(tiny->c.io.at("noise"));
  auto r2 = engine::Sample(Settings("DDIM", "", 6), *tiny->schedule, std::move(failing));
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kResourceExhausted);
}

// Records what the hooks see and replaces the guided prediction with zeros.
class ZeroingHooks : public engine::JobExtension {
 public:
  Points points() const override {
    Points points;
    points.cfg = true;
    return points;
  }
  absl::Status BeforeModel(engine::CfgDenoiserInputs& in) override {
    ++before;
    EXPECT_EQ(in.cond_rows, 1);
    EXPECT_EQ(in.x.size(0), 2);
    EXPECT_EQ(in.sigma.size(0), 2);
    EXPECT_EQ(in.text_cond.size(0), 1);
    EXPECT_EQ(in.text_uncond.size(0), 1);
    EXPECT_EQ(in.total_sampling_steps, 6);
    steps_seen.push_back(in.sampling_step);
    return absl::OkStatus();
  }
  absl::Status AfterModel(int, int, int cond_rows, at::Tensor& x) override {
    ++after;
    EXPECT_EQ(cond_rows, 1);
    EXPECT_EQ(x.size(0), 2);
    return absl::OkStatus();
  }
  absl::Status AfterCfg(int, int, at::Tensor& x) override {
    EXPECT_EQ(x.size(0), 1);
    x = at::zeros_like(x);
    return fail_after_cfg ? absl::FailedPreconditionError("plugin refused") : absl::OkStatus();
  }
  int before = 0, after = 0;
  bool fail_after_cfg = false;
  std::vector<int> steps_seen;
};

TEST(SamplingTest, PluginHooksSeeWebUisBatchAndCanReplaceThePrediction) {
  auto tiny = LoadTiny("txt2img-tiny");
  ASSERT_TRUE(tiny);
  ZeroingHooks hooks;
  engine::SamplingInputs in;
  in.model = tiny->Eps();
  in.conditioning = tiny->Conditioning();
  in.noise = tiny->c.io.at("noise");
  in.step_noise = Zeros(tiny->c.io.at("noise"));
  in.extension = &hooks;
  auto result = engine::Sample(Settings("DPM++ 2M", "Karras", 6), *tiny->schedule, std::move(in));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(hooks.before, 6);
  EXPECT_EQ(hooks.after, 6);
  EXPECT_EQ(hooks.steps_seen, (std::vector<int>{0, 0, 1, 2, 3, 4}));  // WebUI: the previous callback's index
  // DPM++ 2M's last step returns the guided x0, which the hook zeroed.
  EXPECT_EQ(result->latent.abs().max().item<float>(), 0.0f);

  hooks.fail_after_cfg = true;
  engine::SamplingInputs again;
  again.model = tiny->Eps();
  again.conditioning = tiny->Conditioning();
  again.noise = tiny->c.io.at("noise");
  again.step_noise = Zeros(tiny->c.io.at("noise"));
  again.extension = &hooks;
  auto failed = engine::Sample(Settings("Euler a", "", 6), *tiny->schedule, std::move(again));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(BrownianTreeTest, IncrementsAreConsistentAdditiveAndPerImage) {
  const std::vector<int64_t> shape{4, 8, 8};
  engine::BrownianTreeNoise tree(shape, {42, 7}, 0.03, 14.6, at::kCPU);
  // Same query, same noise, whatever was asked in between.
  const at::Tensor a = tree(14.6, 6.0);
  tree(3.0, 1.0);
  EXPECT_TRUE(at::equal(a, tree(14.6, 6.0)));
  // W is one path: the normalised increments over [2, 6] and [6, 10] add up to the one over [2, 10].
  const at::Tensor w1 = tree(10.0, 6.0) * std::sqrt(4.0), w2 = tree(6.0, 2.0) * std::sqrt(4.0);
  EXPECT_TRUE(AllClose(w1 + w2, tree(10.0, 2.0) * std::sqrt(8.0), 1e-4, 1e-4, "additivity"));
  // Per-image trees: image 1 of the batch equals a tree of its seed alone; images differ.
  engine::BrownianTreeNoise alone(shape, {7}, 0.03, 14.6, at::kCPU);
  EXPECT_TRUE(at::equal(a[1], alone(14.6, 6.0)[0]));
  EXPECT_FALSE(at::allclose(a[0], a[1]));
  // Unit variance increments.
  const double var = tree(0.5, 0.4).var().item<double>();
  EXPECT_GT(var, 0.6);
  EXPECT_LT(var, 1.5);
}

TEST(SamplingTest, QuantizeSendsIntegerTimesteps) {
  auto tiny = LoadTiny("txt2img-tiny");
  ASSERT_TRUE(tiny);
  for (bool quantize : {false, true}) {
    std::vector<float> seen;
    engine::SamplingInputs in;
    in.model = [&](engine::ModelCall& call) {
      const at::Tensor& x = call.x;
      const at::Tensor& t = call.timesteps;
      const at::Tensor& ctx = call.context;
      seen.push_back(t[0].item<float>());
      return tiny->unet->Forward(x, t, ctx);
    };
    in.conditioning = tiny->Conditioning();
    in.noise = tiny->c.io.at("noise");
    in.step_noise = Zeros(tiny->c.io.at("noise"));
    auto settings = Settings("DPM++ 2M", "Karras", 4);
    settings.quantize = quantize;
    ASSERT_TRUE(engine::Sample(settings, *tiny->schedule, std::move(in)).ok());
    ASSERT_EQ(seen.size(), 4u);
    int fractional = 0;
    for (float t : seen) fractional += t != std::round(t);
    if (quantize) {
      EXPECT_EQ(fractional, 0);
    } else {
      EXPECT_GT(fractional, 0);  // k-diffusion's default: continuous timesteps
    }
  }
}

TEST(SamplingTest, PromptEditingSchedulesSwitchByDenoiserCall) {
  ScheduledCond c;
  const at::Tensor a = at::zeros({77, 8}), b = at::ones({77, 8});
  c.end_at_step = {2, 5};
  c.tensors = {a, b};
  for (int call : {0, 1, 2}) EXPECT_TRUE(c.At(call).is_same(a)) << call;
  for (int call : {3, 4, 5}) EXPECT_TRUE(c.At(call).is_same(b)) << call;
  EXPECT_TRUE(c.At(6).is_same(a));  // past every entry: WebUI falls back to the first
}

TEST(SamplingTest, InconsistentInputsAreInvalidArgumentsNotCrashes) {
  auto tiny = LoadTiny("img2img-tiny");
  ASSERT_TRUE(tiny);
  const auto& c = tiny->c;
  auto base = [&]() {
    engine::SamplingInputs in;
    in.model = tiny->Eps();
    in.conditioning = tiny->Conditioning();
    in.noise = c.io.at("noise");
    in.step_noise = Zeros(tiny->c.io.at("noise"));
    return in;
  };
  auto code = [&](engine::SamplingSettings settings, engine::SamplingInputs in) {
    return engine::Sample(settings, *tiny->schedule, std::move(in)).status().code();
  };
  const auto euler = Settings("Euler", "", 6);
  {
    auto in = base();
    in.conditioning = tiny->Conditioning(2);  // two prompts, one noise row
    EXPECT_EQ(code(euler, std::move(in)), absl::StatusCode::kInvalidArgument);
  }
  {
    auto in = base();
    in.conditioning.cond[0].clear();
    EXPECT_EQ(code(euler, std::move(in)), absl::StatusCode::kInvalidArgument);
  }
  {
    auto in = base();
    in.conditioning.uncond[0].end_at_step.push_back(3);  // more end steps than tensors
    EXPECT_EQ(code(euler, std::move(in)), absl::StatusCode::kInvalidArgument);
  }
  {
    auto in = base();
    in.seeds = {};  // the default Brownian tree needs one seed per image
    EXPECT_EQ(code(Settings("DPM++ 2M SDE", "", 6), std::move(in)), absl::StatusCode::kInvalidArgument);
  }
  {
    auto in = base();
    in.init_latent = c.io.at("init_latent");
    auto fix = euler;
    fix.img2img_fix_steps = true;
    fix.denoising_strength = 1e-9;  // would need billions of steps
    EXPECT_EQ(code(fix, std::move(in)), absl::StatusCode::kInvalidArgument);
  }
  // img2img with t_enc 0 (strength < 1/steps) on a timestep sampler runs nothing and returns its noised start.
  for (const char* sampler : {"UniPC", "DDIM", "PLMS"}) {
    auto in = base();
    in.init_latent = c.io.at("init_latent");
    auto settings = Settings(sampler, "", 6);
    settings.denoising_strength = 0.1;
    auto result = engine::Sample(settings, *tiny->schedule, std::move(in));
    ASSERT_TRUE(result.ok()) << sampler << ": " << result.status();
    EXPECT_TRUE(at::isfinite(result->latent).all().item<bool>()) << sampler;
  }
  // Interrupted before the first evaluation, img2img returns the init latent (WebUI's last_latent).
  {
    std::atomic<bool> stop{true};
    auto in = base();
    in.init_latent = c.io.at("init_latent");
    in.interrupt = [&] { return stop.load(); };
    auto result = engine::Sample(euler, *tiny->schedule, std::move(in));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->interrupted);
    EXPECT_TRUE(at::equal(result->latent, c.io.at("init_latent")));
  }
}

// Restart from 20 steps on (WebUI's sd_samplers_extra): a Karras schedule of 20 - 9 = 11 Heun steps (10 with two
// evaluations, the last to 0 with one) plus one restart segment back up to sigma 2 (Karras of 10 values without
// its 0: 9 Heun steps of two evaluations), entered with one noise draw.
TEST(SamplingTest, RestartAddsItsSegmentFromTwentySteps) {
  const engine::ModelSchedule schedule(engine::ComputeAlphasCumprod(engine::ScheduleConfig()));
  int calls = 0, draws = 0;
  engine::SamplingInputs in;
  in.model = [&](engine::ModelCall& call) -> absl::StatusOr<at::Tensor> {
    const at::Tensor& x = call.x;
    ++calls;
    return at::zeros_like(x);
  };
  in.conditioning.cond.push_back({WeightedCond{ScheduledCond::Fixed(at::rand({77, 32})), 1.0}});
  in.conditioning.uncond.push_back(ScheduledCond::Fixed(at::rand({77, 32})));
  in.noise = at::randn({1, 4, 8, 8});
  in.step_noise = [&](double, double) {
    ++draws;
    return at::zeros({1, 4, 8, 8});
  };
  auto result = engine::Sample(Settings("Restart", "", 20), schedule, std::move(in));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(calls, 21 + 18);
  EXPECT_EQ(draws, 1);
  EXPECT_EQ(result->reported_steps, 11 + 9);
  EXPECT_TRUE(at::isfinite(result->latent).all().item<bool>());
}

// s_churn reaches Euler (its churn noise then enters the result) and s_noise reaches DPM2 a, but not Euler a:
// WebUI's sampler_extra_params.
TEST(SamplingTest, ChurnAndNoiseSettingsReachOnlyTheSamplersWebUiPassesThemTo) {
  auto tiny = LoadTiny("txt2img-tiny");
  ASSERT_TRUE(tiny);
  auto run = [&](engine::SamplingSettings settings) {
    engine::SamplingInputs in;
    in.model = tiny->Eps();
    in.conditioning = tiny->Conditioning();
    in.noise = tiny->c.io.at("noise");
    in.step_noise = [&](double, double) { return at::ones_like(tiny->c.io.at("noise")); };
    auto r = engine::Sample(settings, *tiny->schedule, std::move(in));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->latent : at::Tensor();
  };
  auto with = [](engine::SamplingSettings s, double churn, double noise) {
    s.s_churn = churn;
    s.s_noise = noise;
    return s;
  };
  const auto euler = Settings("Euler", "", 4), euler_a = Settings("Euler a", "", 4), dpm2_a = Settings("DPM2 a", "", 4);
  EXPECT_FALSE(at::allclose(run(with(euler, 1.0, 1.0)), run(euler)));
  EXPECT_TRUE(at::equal(run(with(euler_a, 0, 0.5)), run(euler_a)));
  EXPECT_FALSE(at::allclose(run(with(dpm2_a, 0, 0.5)), run(dpm2_a)));
}

TEST(SamplingTest, TimestepsAndSchedulesFollowWebUi) {
  auto s = Settings("DDIM", "", 6);
  EXPECT_EQ(engine::SamplerTimesteps(s), (std::vector<int>{1, 167, 333, 499, 665, 831, 997}));
  s.steps = 1000;
  EXPECT_EQ(engine::SamplerTimesteps(s).size(), 1000u);
  s.steps = 2000 / 2;
  auto fix = Settings("Euler", "", 10);
  fix.img2img_fix_steps = true;
  fix.denoising_strength = 0.5;
  EXPECT_EQ(engine::Img2ImgSteps(fix), std::make_pair(20, 9));
}

}  // namespace
}  // namespace atelier
