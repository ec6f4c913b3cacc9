// atelier-web's WebUI shapes: /progress arithmetic, Processed.js() from infotexts, the request echo, status codes.
#include "webui_json.h"

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"

namespace atelier::web {
namespace {

using nlohmann::json;

TEST(WebUiProgressTest, IdleIsWebUisIdleState) {
  const json p = ProgressJson(ProgressState{}, false);
  EXPECT_EQ(p["progress"], 0.0);
  EXPECT_EQ(p["eta_relative"], 0.0);
  EXPECT_TRUE(p["current_image"].is_null());
  EXPECT_TRUE(p["textinfo"].is_null());
  EXPECT_EQ(p["state"]["job"], "");
  EXPECT_EQ(p["state"]["job_count"], 0);
  EXPECT_EQ(p["state"]["job_timestamp"], "0");
  EXPECT_EQ(p["state"].size(), 9u);
}

TEST(WebUiProgressTest, ProgressEtaAndPreviewFollowWebUisFormula) {
  ProgressState s;
  s.active = true;
  s.job = "abc";
  s.job_no = 1;
  s.job_count = 4;
  s.sampling_step = 5;
  s.sampling_steps = 20;
  s.elapsed_seconds = 3.0;
  s.started_unix_ms = 1765000000000;
  s.current_image = std::string("\xff\xd8jpeg", 6);
  const json p = ProgressJson(s, false);
  const double progress = 0.01 + 1.0 / 4 + 1.0 / 4 * 5 / 20;  // shared_state: job_no / job_count + step share
  EXPECT_DOUBLE_EQ(p["progress"].get<double>(), progress);
  EXPECT_DOUBLE_EQ(p["eta_relative"].get<double>(), 3.0 / progress - 3.0);
  EXPECT_EQ(p["current_image"], absl::Base64Escape(s.current_image));
  EXPECT_EQ(p["state"]["job"], "abc");
  EXPECT_EQ(p["state"]["job_timestamp"].get<std::string>().size(), 14u);
  EXPECT_TRUE(ProgressJson(s, /*skip_current_image=*/true)["current_image"].is_null());
  s.job_no = 4;  // past the end: clamped
  EXPECT_DOUBLE_EQ(ProgressJson(s, false)["progress"].get<double>(), 1.0);
}

TEST(WebUiInfoTest, ProcessedJsFromTheInfotexts) {
  const json parameters = RequestParameters(json{{"prompt", "ignored"}, {"batch_size", 2}}, false);
  JobOutcome outcome;
  outcome.all_seeds = {7, 8};
  outcome.all_subseeds = {70, 71};
  outcome.infotexts = {
      "a cat\nNegative prompt: ugly\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 8, Seed: 7, "
      "Size: 608x896, Model hash: 0123456789, Model: anime, Denoising strength: 0.6, Clip skip: 2, "
      "Emphasis: No norm, Lora hashes: \"a: 1234\"",
      "a cat\nNegative prompt: ugly\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 8, Seed: 8, Size: 608x896"};
  const json info = json::parse(InfoJson(parameters, outcome));
  std::vector<std::string> keys;
  for (auto it = info.begin(); it != info.end(); ++it) keys.push_back(it.key());
  ASSERT_EQ(keys.size(), 32u);
  EXPECT_EQ(info["prompt"], "a cat");
  EXPECT_EQ(info["negative_prompt"], "ugly");
  EXPECT_EQ(info["all_prompts"], json::array({"a cat", "a cat"}));
  EXPECT_EQ(info["all_seeds"], json::array({7, 8}));
  EXPECT_EQ(info["subseed"], 70);
  EXPECT_EQ(info["width"], 608);
  EXPECT_EQ(info["height"], 896);
  EXPECT_EQ(info["steps"], 30);
  EXPECT_EQ(info["cfg_scale"], 8);
  EXPECT_EQ(info["sampler_name"], "DPM++ 2M");
  EXPECT_EQ(info["sd_model_name"], "anime");
  EXPECT_EQ(info["sd_model_hash"], "0123456789");
  EXPECT_EQ(info["clip_skip"], 2);
  EXPECT_EQ(info["denoising_strength"], 0.6);
  EXPECT_EQ(info["batch_size"], 2);
  // extra_generation_params: the keys create_infotext does not write from the job's own fields ("Schedule type"
  // it does).
  EXPECT_EQ(info["extra_generation_params"], (json{{"Emphasis", "No norm"}, {"Lora hashes", "a: 1234"}}));
  EXPECT_EQ(info["infotexts"].size(), 2u);
}

TEST(WebUiInfoTest, RequestParametersAreWebUisModelWithDefaults) {
  const json t = RequestParameters(json{{"prompt", "x"}, {"steps", 5}}, false);
  EXPECT_EQ(t["prompt"], "x");
  EXPECT_EQ(t["steps"], 5);
  EXPECT_EQ(t["sampler_index"], "Euler");
  EXPECT_EQ(t["cfg_scale"], 7.0);
  EXPECT_EQ(t["hr_scale"], 2.0);
  EXPECT_FALSE(t.contains("mask_blur_x"));
  const json i = RequestParameters(json{{"init_images", json::array({"b64"})}}, true);
  EXPECT_EQ(i["mask_blur_x"], 4);
  EXPECT_EQ(i["inpaint_full_res"], true);
  EXPECT_FALSE(i.contains("enable_hr"));
  EXPECT_EQ(i["init_images"], json::array({"b64"}));
}

TEST(WebUiErrorsTest, StatusCodesAndBody) {
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::INVALID_ARGUMENT), 422);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::NOT_FOUND), 404);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::UNAVAILABLE), 503);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::UNAUTHENTICATED), 401);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::RESOURCE_EXHAUSTED), 429);
  const json body = ErrorBody("HTTPException", "Sampler not found");
  EXPECT_EQ(body, (json{{"error", "HTTPException"}, {"detail", "Sampler not found"}, {"body", ""},
                        {"errors", "Sampler not found"}}));
}

}  // namespace
}  // namespace atelier::web
