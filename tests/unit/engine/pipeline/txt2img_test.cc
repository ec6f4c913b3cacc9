// txt2img and img2img through the engine pipeline from the tiny-sd checkpoint file: prompt -> WebUI conditioning ->
// seeded CPU noise -> DPM++ 2M Karras -> VAE -> 8-bit RGB equals txt2img-tiny's / img2img-tiny's image (+-1 where
// WebUI's truncation sits on a boundary); a batch of 3 equals three single runs with seeds s, s+1, s+2; bad
// requests are INVALID_ARGUMENT.
#include <gtest/gtest.h>

#include <filesystem>
#include <utility>

#include <ATen/ATen.h>

#include "engine/io/model_folders.h"
#include "engine/models/model_manager.h"
#include "engine/pipeline/generate.h"
#include "engine/pipeline/generation_infotext.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;

struct TinyPipeline {
  testing::FixtureCase c;
  testing::TempDir root;
  std::unique_ptr<engine::ClipTokenizer> tokenizer;
  std::unique_ptr<engine::Sd1Pipeline> pipeline;
};

// A case's checkpoint (tiny-sd) as a user would install it: the checkpoint and its yaml in models/Stable-diffusion,
// loaded by the model manager.
std::unique_ptr<TinyPipeline> Load(const testing::FixtureCase& c) {
  auto t = std::make_unique<TinyPipeline>();
  t->c = c;
  testing::InstallTinyCheckpoint(testing::WeightsFile(t->c), t->root.path() / "models");
  auto folders = engine::ModelFolders::Open(t->root.path());
  EXPECT_TRUE(folders.ok()) << folders.status();
  if (!folders.ok()) return nullptr;
  engine::ModelManager manager(&*folders, "", engine::LoadOptions());
  auto weights = manager.Load("tiny", "None");
  EXPECT_TRUE(weights.ok()) << weights.status();
  if (!weights.ok()) return nullptr;
  auto tokenizer = engine::ClipTokenizer::Load(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return nullptr;
  t->tokenizer = *std::move(tokenizer);
  auto pipeline = engine::Sd1Pipeline::Create(*weights, *t->tokenizer, nullptr);
  EXPECT_TRUE(pipeline.ok()) << pipeline.status();
  if (!pipeline.ok()) return nullptr;
  t->pipeline = *std::move(pipeline);
  return t;
}

// The first case of kind `case_name`; null, and a test failure naming the fixtures folder, when there is none.
std::unique_ptr<TinyPipeline> Load(const std::string& case_name = "txt2img-tiny") {
  const auto cases = testing::CasesOf(case_name);
  return cases.empty() ? nullptr : Load(cases.front());
}

engine::GenerationParams CaseParams(const testing::FixtureCase& c) {
  const auto& v = c.json["values"];
  engine::GenerationParams p;
  p.prompt = v["prompt"];
  p.negative_prompt = v["negative_prompt"];
  p.width = v["width"];
  p.height = v["height"];
  p.seed = v["seed"];
  p.sampling.choice = *engine::ResolveSampler(v["sampler"].get<std::string>(), v["schedule_type"].get<std::string>());
  p.sampling.steps = v["steps"];
  p.sampling.cfg_scale = v["cfg_scale"];
  p.text.clip_skip = v["clip_skip"];
  p.noise_source = *engine::ParseNoiseSource(v["randn_source"].get<std::string>());
  if (v.contains("eta") && v["eta"].is_number()) p.sampling.eta = v["eta"].get<double>();  // null: WebUI's default
  return p;
}

// WebUI's infotext parameters of a case's values, from "Steps" to "Size": "Steps: 6, Sampler: DPM++ 2M, Schedule
// type: Karras, CFG scale: 7.0, Seed: 42, Size: 128x128" for txt2img-tiny.
std::string InfotextSettings(const nlohmann::json& v) {
  return "Steps: " + std::to_string(v["steps"].get<int>()) + ", Sampler: " + v["sampler"].get<std::string>() +
         ", Schedule type: " + v["schedule_type"].get<std::string>() + ", CFG scale: " + v["cfg_scale"].dump() +
         ", Seed: " + std::to_string(v["seed"].get<int64_t>()) + ", Size: " + std::to_string(v["width"].get<int>()) +
         "x" + std::to_string(v["height"].get<int>());
}

// The end of WebUI's infotext for a case's values: Clip skip when above 1, the RNG when not WebUI's default GPU.
std::string InfotextEnd(const nlohmann::json& v) {
  std::string end;
  if (v["clip_skip"].get<int>() > 1) end += ", Clip skip: " + std::to_string(v["clip_skip"].get<int>());
  if (v["randn_source"].get<std::string>() != "GPU") end += ", RNG: " + v["randn_source"].get<std::string>();
  return end;
}

TEST(Txt2ImgTest, TinyCheckpointMakesWebUisImage) {
  for (const auto& txt2img_case : testing::CasesOf("txt2img-tiny")) {
    SCOPED_TRACE(txt2img_case.dir.string());
    auto t = Load(txt2img_case);
    ASSERT_TRUE(t);
    const auto& c = t->c;
    const auto& v = c.json["values"];
    int steps_seen = 0;
    engine::GenerationControl control;
    control.progress = [&](const engine::SamplingProgress&) { ++steps_seen; };
    auto result = engine::Generate(*t->pipeline, CaseParams(c), control);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->images.size(), 1u);
    const auto& image = result->images[0];
    EXPECT_EQ(image.seed, v["seed"].get<int64_t>());
    EXPECT_EQ(steps_seen, v["steps"].get<int>());
    EXPECT_TRUE(testing::AllClose(image.latent.unsqueeze(0), c.io.at("final_latent"), c.atol, c.rtol, "final_latent"));
    const at::Tensor want = c.io.at("image_uint8");
    ASSERT_EQ(image.rgb.sizes(), want.sizes());
    const int64_t max_diff = (image.rgb.to(at::kInt) - want.to(at::kInt)).abs().max().item<int64_t>();
    EXPECT_LE(max_diff, 1) << "uint8 image differs by " << max_diff;

    const std::string infotext =
        engine::CreateInfotext(engine::GenerationInfotext(*t->pipeline, CaseParams(c), image, result->eta));
    const std::string negative = v["negative_prompt"].get<std::string>();
    EXPECT_EQ(infotext, v["prompt"].get<std::string>() + "\n" +
                            (negative.empty() ? "" : "Negative prompt: " + negative + "\n") + InfotextSettings(v) +
                            ", Model hash: " + t->pipeline->weights().sha256.substr(0, 10) + ", Model: tiny" +
                            InfotextEnd(v));

    // WebUI notes a non-default emphasis mode when a prompt uses brackets (after the sampler's keys), and img2img's
    // noise multiplier.
    auto params = CaseParams(c);
    params.text.chunking.emphasis = engine::Emphasis::kNoNorm;
    EXPECT_EQ(engine::CreateInfotext(engine::GenerationInfotext(*t->pipeline, params, image, 1.0)).find("Emphasis"),
              std::string::npos);
    params.prompt = "a (red:1.2) circle";
    EXPECT_NE(engine::CreateInfotext(engine::GenerationInfotext(*t->pipeline, params, image, 1.0))
                  .find(InfotextEnd(v) + ", Emphasis: No norm"),
              std::string::npos);
  }
}

// img2img-tiny: the init image encoded with the case's posterior eps (WebUI draws it from its global RNG), strength
// 0.6 over 6 steps runs the last 4 sigmas.
TEST(Txt2ImgTest, Img2ImgFromTheInitImageMakesWebUisImage) {
  for (const auto& img2img_case : testing::CasesOf("img2img-tiny")) {
    SCOPED_TRACE(img2img_case.dir.string());
    auto t = Load(img2img_case);
    ASSERT_TRUE(t);
    const auto& c = t->c;
    const auto& v = c.json["values"];
    auto params = CaseParams(c);
    params.init_image = c.io.at("init_image_uint8");
    params.posterior_noise = c.io.at("posterior_eps");
    params.sampling.denoising_strength = v["denoising_strength"];
    if (v.contains("img2img_fix_steps")) params.sampling.img2img_fix_steps = v["img2img_fix_steps"].get<bool>();
    int steps_seen = 0;
    engine::GenerationControl control;
    control.progress = [&](const engine::SamplingProgress&) { ++steps_seen; };
    auto result = engine::Generate(*t->pipeline, params, control);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(steps_seen, v["steps_run"].get<int>());
    EXPECT_TRUE(testing::AllClose(result->init_latent, c.io.at("init_latent"), c.atol, c.rtol, "init_latent"));
    ASSERT_EQ(result->images.size(), 1u);
    EXPECT_TRUE(testing::AllClose(result->images[0].latent.unsqueeze(0), c.io.at("final_latent"), c.atol, c.rtol,
                                  "final_latent"));
    const at::Tensor want = c.io.at("image_uint8");
    const int64_t max_diff = (result->images[0].rgb.to(at::kInt) - want.to(at::kInt)).abs().max().item<int64_t>();
    EXPECT_LE(max_diff, 1) << "uint8 image differs by " << max_diff;
    const std::string infotext =
        engine::CreateInfotext(engine::GenerationInfotext(*t->pipeline, params, result->images[0], result->eta));
    EXPECT_NE(infotext.find(", Denoising strength: " + v["denoising_strength"].dump() + InfotextEnd(v)),
              std::string::npos)
        << infotext;

    params.init_image = params.init_image.slice(0, 0, params.init_image.size(0) / 2);  // not the requested size
    EXPECT_EQ(engine::Generate(*t->pipeline, params).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(Txt2ImgTest, BatchOfThreeEqualsThreeSingleRuns) {
  auto t = Load();
  ASSERT_TRUE(t);
  auto params = CaseParams(t->c);
  params.sampling.steps = 3;
  params.batch_size = 3;
  params.seed = 100;
  auto batch = engine::Generate(*t->pipeline, params);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->images.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    auto single_params = params;
    single_params.batch_size = 1;
    single_params.seed = 100 + i;
    auto single = engine::Generate(*t->pipeline, single_params);
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_EQ(batch->images[i].seed, 100 + i);
    EXPECT_TRUE(testing::AllClose(batch->images[i].latent, single->images[0].latent, 1e-3, 1e-4, "batch vs single"));
  }
  EXPECT_FALSE(at::equal(batch->images[0].rgb, batch->images[1].rgb));
}

// Skip ends the current batch early (its image is its last x0) and the next batch runs in full; Interrupt ends
// the job after the current batch.
TEST(Txt2ImgTest, SkipEndsOneBatchAndInterruptEndsTheJob) {
  auto t = Load();
  ASSERT_TRUE(t);
  auto params = CaseParams(t->c);
  params.sampling.steps = 4;
  params.n_iter = 3;
  std::vector<int> steps_per_batch;
  bool skip_now = false, stop_now = false;
  engine::GenerationControl control;
  control.batch_started = [&](int, int) { steps_per_batch.push_back(0); };
  control.progress = [&](const engine::SamplingProgress& p) {
    ++steps_per_batch.back();
    if (steps_per_batch.size() == 1 && p.step == 1) skip_now = true;
  };
  control.skip = [&] { return std::exchange(skip_now, false); };
  control.interrupt = [&] { return stop_now; };
  auto result = engine::Generate(*t->pipeline, params, control);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(steps_per_batch, (std::vector<int>{2, 4, 4}));
  EXPECT_EQ(result->images.size(), 3u);
  EXPECT_EQ(result->skipped_batches, 1);
  EXPECT_FALSE(result->interrupted);

  steps_per_batch.clear();
  control.progress = [&](const engine::SamplingProgress& p) {
    ++steps_per_batch.back();
    if (steps_per_batch.size() == 2 && p.step == 0) stop_now = true;
  };
  result = engine::Generate(*t->pipeline, params, control);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(steps_per_batch, (std::vector<int>{4, 1}));
  EXPECT_EQ(result->images.size(), 2u);  // the interrupted batch keeps its last x0, as WebUI
  EXPECT_TRUE(result->interrupted);
}

TEST(Txt2ImgTest, BadRequestsAreInvalidArguments) {
  auto t = Load();
  ASSERT_TRUE(t);
  auto p = CaseParams(t->c);
  p.width = 100;  // not a multiple of 8
  EXPECT_EQ(engine::Generate(*t->pipeline, p).status().code(), absl::StatusCode::kInvalidArgument);
  p = CaseParams(t->c);
  p.batch_size = 10000;
  EXPECT_EQ(engine::Generate(*t->pipeline, p).status().code(), absl::StatusCode::kInvalidArgument);
  p = CaseParams(t->c);
  p.sampling.steps = -1;
  EXPECT_EQ(engine::Generate(*t->pipeline, p).status().code(), absl::StatusCode::kInvalidArgument);
  p = CaseParams(t->c);
  p.subseed_strength = 2;
  EXPECT_EQ(engine::Generate(*t->pipeline, p).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atelier
