// Reading infotext back as WebUI's parse_generation_parameters does (the doc's examples: hires, variation seed,
// JSON-quoted extension values, the legacy "DPM++ 2M Karras" sample, prompt-only text), and the API's `infotext`
// field filling a request; write -> parse -> write is the identity over random requests.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "engine/pipeline/infotext.h"
#include "engine/pipeline/infotext_parse.h"
#include "engine/sampling/sampler_table.h"
#include "engine/sampling/schedulers.h"
#include "engine/pipeline/generate.h"
#include "engine/pipeline/generation_infotext.h"
#include "server/generation_settings.h"
#include "server/request_validation.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::atelier::v1;

TEST(InfotextParseTest, HiresExampleFromTheDoc) {
  const auto p = engine::ParseInfotext(
      "masterpiece, best quality, 1girl, solo, (silver hair:1.2), looking at viewer\n"
      "Negative prompt: lowres, bad anatomy, bad hands, (worst quality:1.4)\n"
      "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 8.0, Seed: 3052235498, Size: 608x896, Model "
      "hash: 0a1b2c3d4e, Model: UnlimitedDiffusionWorks, Denoising strength: 0.6, Clip skip: 2, Hires upscale: 2.0, "
      "Hires steps: 15, Hires upscaler: Latent, Version: v1.10.1");
  EXPECT_EQ(p.prompt, "masterpiece, best quality, 1girl, solo, (silver hair:1.2), looking at viewer");
  EXPECT_EQ(p.negative_prompt, "lowres, bad anatomy, bad hands, (worst quality:1.4)");
  const std::map<std::string, std::string> want = {
      {"Steps", "30"}, {"Sampler", "DPM++ 2M"}, {"Schedule type", "Karras"}, {"CFG scale", "8.0"},
      {"Seed", "3052235498"}, {"Size-1", "608"}, {"Size-2", "896"}, {"Model hash", "0a1b2c3d4e"},
      {"Model", "UnlimitedDiffusionWorks"}, {"Denoising strength", "0.6"}, {"Clip skip", "2"},
      {"Hires upscale", "2.0"}, {"Hires steps", "15"}, {"Hires upscaler", "Latent"}, {"Version", "v1.10.1"},
      {"RNG", "GPU"}, {"Hires sampler", "Use same sampler"}, {"Masked content", "original"}};
  for (const auto& [key, value] : want) {
    ASSERT_NE(p.Find(key), nullptr) << key;
    EXPECT_EQ(*p.Find(key), value) << key;
  }
}

TEST(InfotextParseTest, QuotedValuesAndVariationSeeds) {
  const auto p = engine::ParseInfotext(
      "1girl, cherry blossoms\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, "
      "Size: 512x768, Variation seed: 5678, Variation seed strength: 0.3, Clip skip: 2, ENSD: 31337, RNG: CPU, "
      "ControlNet 0: \"Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0\", Version: v1.10.1");
  EXPECT_EQ(p.prompt, "1girl, cherry blossoms");
  EXPECT_EQ(p.negative_prompt, "");
  EXPECT_EQ(*p.Find("Variation seed"), "5678");
  EXPECT_EQ(*p.Find("ENSD"), "31337");
  EXPECT_EQ(*p.Find("RNG"), "CPU");
  EXPECT_EQ(*p.Find("ControlNet 0"), "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0");
  EXPECT_EQ(*p.Find("Version"), "v1.10.1");
}

// The seed document's legacy sample: the combined sampler name splits as WebUI splits it (Karras is DPM++ 2M's
// default, so "Automatic"), which runs the Karras schedule; no hires keys, so no hires fix.
TEST(InfotextParseTest, LegacySampleSplitsTheSamplerAndFillsARequest) {
  const std::string text =
      "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 8, Size: 608x896, Denoising strength: 0.6, Clip skip: 2";
  const auto p = engine::ParseInfotext("a castle\n" + text);
  EXPECT_EQ(*p.Find("Sampler"), "DPM++ 2M");
  auto choice = engine::ResolveSampler(*p.Find("Sampler"), *p.Find("Schedule type"));
  ASSERT_TRUE(choice.ok());
  EXPECT_EQ(engine::EffectiveScheduler(*choice), engine::Scheduler::kKarras);

  v1::GenerateRequest r;
  r.set_infotext("a castle\n" + text);
  ASSERT_TRUE(server::ValidateAndFillDefaults(r).ok());
  EXPECT_EQ(r.prompt(), "a castle");
  EXPECT_EQ(r.steps(), 30);
  EXPECT_EQ(r.sampler_name(), "DPM++ 2M");
  EXPECT_FLOAT_EQ(r.cfg_scale(), 8.0f);
  EXPECT_EQ(r.width(), 608);
  EXPECT_EQ(r.height(), 896);
  EXPECT_FALSE(r.enable_hr());
  EXPECT_EQ(r.override_settings().fields().at("CLIP_stop_at_last_layers").number_value(), 2);
  auto settings = server::JobSettingsFromRequest(r);
  ASSERT_TRUE(settings.ok()) << settings.status();
  EXPECT_EQ(engine::EffectiveScheduler(settings->params.sampling.choice), engine::Scheduler::kKarras);
  EXPECT_EQ(settings->params.text.clip_skip, 2);
  EXPECT_DOUBLE_EQ(settings->params.sampling.cfg_scale, 8.0);

  // Fields the request sets win over the infotext.
  v1::GenerateRequest mine;
  mine.set_infotext("a castle\n" + text);
  mine.set_steps(12);
  mine.set_prompt("a tower");
  ASSERT_TRUE(server::ValidateAndFillDefaults(mine).ok());
  EXPECT_EQ(mine.steps(), 12);
  EXPECT_EQ(mine.prompt(), "a tower");
  EXPECT_EQ(mine.width(), 608);
}

TEST(InfotextParseTest, TextWithoutParametersIsAllPrompt) {
  const auto p = engine::ParseInfotext("a cat, sitting\non a mat: red\nNegative prompt: dog\nblurry");
  EXPECT_EQ(p.prompt, "a cat, sitting\non a mat: red");
  EXPECT_EQ(p.negative_prompt, "dog\nblurry");
  EXPECT_EQ(p.Find("Steps"), nullptr);
  EXPECT_EQ(*p.Find("Clip skip"), "1");
  EXPECT_THAT(engine::InfotextPairs("Steps: 20, bad, Seed: \"unterminated, Size: 1x2"),
              ::testing::ElementsAre(::testing::Pair("Steps", "20"), ::testing::Pair("Seed", "\"unterminated"),
                                     ::testing::Pair("Size", "1x2")));
}

// Python's str regex: \w and \s are Unicode classes, key lengths count characters, empty values are dropped
// (WebUI's v[0] raises on them), and a long line without pairs is scanned in linear time.
TEST(InfotextParseTest, MatchesPythonsFindallOnUnicodeAndEmptyValues) {
  EXPECT_TRUE(engine::InfotextPairs("(猫:1.2), (犬:1.1), (鳥:0.9)").empty());  // one-character keys
  EXPECT_THAT(engine::InfotextPairs("★Extra: 5, 猫耳: 1, Nbsp:\u00a0x"),
              ::testing::ElementsAre(::testing::Pair("Extra", "5"), ::testing::Pair("猫耳", "1"),
                                     ::testing::Pair("Nbsp", "x")));
  EXPECT_THAT(engine::InfotextPairs("Steps: , Seed: 3, Clip skip:"), ::testing::ElementsAre(::testing::Pair("Seed", "3")));
  const auto p = engine::ParseInfotext("(猫:1.2), (犬:1.1), (鳥:0.9)");
  EXPECT_EQ(p.prompt, "(猫:1.2), (犬:1.1), (鳥:0.9)");
  const std::string long_line(800000, 'a');
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(engine::InfotextPairs(long_line).empty());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  v1::GenerateRequest r;
  r.set_infotext("x\nSteps: 1e30, Sampler: Euler, CFG scale: 7");
  EXPECT_EQ(server::ValidateAndFillDefaults(r).code(), absl::StatusCode::kInvalidArgument);
}

TEST(InfotextParseTest, NonNumbersWhereNumbersBelongAreInvalid) {
  v1::GenerateRequest r;
  r.set_infotext("x\nSteps: many, Sampler: Euler, CFG scale: 7");
  const auto status = server::ValidateAndFillDefaults(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("Steps: many"));
}

// The infotext of a request's first image, as the daemon writes it.
std::string InfotextOf(v1::GenerateRequest r) {
  EXPECT_TRUE(server::ValidateAndFillDefaults(r).ok());
  auto settings = server::JobSettingsFromRequest(r);
  EXPECT_TRUE(settings.ok()) << settings.status();
  if (!settings.ok()) return "";
  engine::Sd1Weights weights;
  weights.filename = "anime/udw.safetensors";
  weights.sha256 = "0a1b2c3d4e5f";
  engine::GeneratedImage image;
  image.seed = r.seed();
  image.subseed = r.subseed();
  const auto& sampler = *settings->params.sampling.choice.sampler;
  const double eta = settings->params.sampling.eta.value_or(sampler.timesteps ? 0.0 : 1.0);
  return engine::CreateInfotext(engine::GenerationInfotext(weights, settings->params, image, eta));
}

TEST(InfotextParseTest, WriteParseWriteIsTheIdentity) {
  std::mt19937_64 rng(20261126);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  const char* const kWords[] = {"1girl", "(silver hair:1.2)", "cherry, blossoms", "a: b", "[red:blue:0.5]",
                                "café", "狐", "\"quoted\"", "BREAK", "AND", "masterpiece"};
  auto text = [&](int max_words) {
    std::string out;
    for (int i = pick(max_words + 1); i > 0; --i) out += std::string(out.empty() ? "" : " ") + kWords[pick(11)];
    if (!out.empty() && pick(5) == 0) out += "\nsecond line";
    return out;
  };
  const auto& samplers = engine::AllSamplers();
  const auto& schedulers = engine::AllSchedulers();
  for (int trial = 0; trial < 300; ++trial) {
    v1::GenerateRequest r;
    r.set_prompt(text(6));
    if (r.prompt().empty()) r.set_prompt("x");
    r.set_negative_prompt(text(3));
    r.set_steps(1 + pick(150));
    r.set_sampler_name(samplers[pick(static_cast<int>(samplers.size()))].name);
    r.set_scheduler(schedulers[pick(static_cast<int>(schedulers.size()))].label);
    r.set_cfg_scale(static_cast<double>(pick(300)) / 10.0);
    r.set_seed(static_cast<int64_t>(rng() % 4294967294ULL));
    r.set_width(64 + 8 * pick(100));
    r.set_height(64 + 8 * pick(100));
    if (pick(3) == 0) {
      r.set_subseed(pick(1000000));
      r.set_subseed_strength(static_cast<double>(pick(100)) / 100.0);
    }
    if (pick(4) == 0) {
      r.set_seed_resize_from_w(64 + 8 * pick(100));
      r.set_seed_resize_from_h(64 + 8 * pick(100));
    }
    if (pick(2) == 0) r.set_eta(static_cast<double>(pick(20)) / 10.0);
    auto& o = *r.mutable_override_settings()->mutable_fields();
    if (pick(2) == 0) o["CLIP_stop_at_last_layers"].set_number_value(1 + pick(12));
    if (pick(3) == 0) o["eta_noise_seed_delta"].set_number_value(pick(2) ? 31337 : 0);
    if (pick(3) == 0) o["randn_source"].set_string_value(pick(2) ? "CPU" : "NV");
    if (pick(4) == 0) o["emphasis"].set_string_value(pick(2) ? "No norm" : "Ignore");
    const char* const kUpscalers[] = {"", "Latent", "Latent (bicubic antialiased)", "Lanczos", "None"};
    if (pick(3) == 0) {
      r.set_enable_hr(true);
      r.set_denoising_strength(static_cast<double>(pick(101)) / 100.0);
      if (pick(2) == 0) {
        r.set_hr_scale(1.0 + static_cast<double>(pick(8)) / 4.0);
      } else {
        r.set_hr_resize_x(pick(2) ? 64 + 8 * pick(60) : 0);
        r.set_hr_resize_y(64 + 8 * pick(60));
      }
      r.set_hr_second_pass_steps(pick(30));
      r.set_hr_upscaler(kUpscalers[pick(5)]);
      if (pick(3) == 0) r.set_hr_sampler_name(samplers[pick(static_cast<int>(samplers.size()))].name);
      if (pick(3) == 0) r.set_hr_scheduler(schedulers[pick(static_cast<int>(schedulers.size()))].label);
      if (pick(3) == 0) r.set_hr_prompt(text(3));
      if (pick(3) == 0) r.set_hr_negative_prompt(text(2));
    } else if (pick(3) == 0) {
      r.add_init_images("not decoded by this test");
      r.set_denoising_strength(static_cast<double>(pick(101)) / 100.0);
      if (pick(2) == 0) r.set_initial_noise_multiplier(static_cast<double>(pick(20)) / 10.0);
    }
    {
      v1::GenerateRequest probe = r;  // random hires sizes can exceed the limits: such requests are refused, skip
      if (!server::ValidateAndFillDefaults(probe).ok() || !server::JobSettingsFromRequest(probe).ok()) continue;
    }
    const std::string first = InfotextOf(r);
    v1::GenerateRequest again;
    again.set_infotext(first);
    *again.mutable_init_images() = r.init_images();
    const std::string second = InfotextOf(again);
    ASSERT_EQ(second, first) << "trial " << trial;
  }
}

}  // namespace
}  // namespace atelier
