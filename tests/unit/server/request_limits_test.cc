// The operator's request limits: each one refuses what passes it, naming its flag; the defaults pass ordinary jobs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/request_limits.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

jobs::JobSettings Ordinary() {
  jobs::JobSettings s;
  s.params.width = 608;
  s.params.height = 896;
  s.params.sampling.steps = 30;
  s.params.batch_size = 4;
  s.params.n_iter = 2;
  return s;
}

std::string Refusal(const jobs::JobSettings& s, const server::RequestLimits& limits, std::vector<int> tokens = {}) {
  const absl::Status st = server::CheckRequestLimits(s, tokens, limits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  return std::string(st.message());
}

TEST(RequestLimitsTest, DefaultsPassAnOrdinaryJob) {
  jobs::JobSettings s = Ordinary();
  s.params.hires.enabled = true;
  s.params.hires.scale = 2;  // 1216x1792
  EXPECT_TRUE(server::CheckRequestLimits(s, {75, 150}, server::RequestLimits{}).ok());
}

TEST(RequestLimitsTest, EachLimitNamesItsFlag) {
  server::RequestLimits limits;
  limits.max_image_side = 512;
  EXPECT_THAT(Refusal(Ordinary(), limits), HasSubstr("width 608, over this daemon's limit of 512 pixels (--max-image-side)"));
  limits = {};
  limits.max_image_pixels = 512 * 512;
  EXPECT_THAT(Refusal(Ordinary(), limits), HasSubstr("--max-image-pixels"));
  limits = {};
  jobs::JobSettings hires = Ordinary();
  hires.params.hires.enabled = true;
  hires.params.hires.scale = 3;  // 1824x2688: 4.9 Mpx, over the default 2048x2048
  EXPECT_THAT(Refusal(hires, limits), HasSubstr("the hires fix pass 1824x2688"));
  limits.max_steps = 20;
  EXPECT_THAT(Refusal(Ordinary(), limits), HasSubstr("steps 30, over this daemon's limit of 20 (--max-steps)"));
  limits = {};
  limits.max_images_per_job = 4;
  EXPECT_THAT(Refusal(Ordinary(), limits), HasSubstr("= 8 images"));
  limits = {};
  EXPECT_THAT(Refusal(Ordinary(), limits, {75, 2251}), HasSubstr("--max-prompt-tokens"));
  jobs::JobSettings video = Ordinary();
  video.plugin_args["animatediff"] = R"({"args": [{"enable": true, "video_length": 300}]})";
  EXPECT_THAT(Refusal(video, limits), HasSubstr("video_length 300, over this daemon's limit of 256 frames"));
  jobs::JobSettings units = Ordinary();
  units.plugin_args["controlnet"] =
      R"({"args": [{"enabled": true}, {"enabled": false}, {"model": "x"}, {"enabled": true}]})";
  EXPECT_EQ(server::EnabledControlNetUnits(units), 3);
  limits.max_controlnet_units = 2;
  EXPECT_THAT(Refusal(units, limits), HasSubstr("3 enabled ControlNet units"));
  limits = {};
  limits.max_plugin_args_bytes = 10;
  EXPECT_THAT(Refusal(units, limits), HasSubstr("--max-plugin-args-kb"));
}

}  // namespace
}  // namespace atelier
