// Prompt travel as sd-webui-animatediff computes it: the line syntax (head, "N: text" keys, tail), the keyframe
// prompts, the slerp against its closed form, and a worked example of the per-frame interpolation, open and closed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>

#include "prompt_travel.h"

namespace atelier {
namespace {

using animatediff::ParsePromptTravel;
using ::testing::HasSubstr;

TEST(PromptTravelTest, LinesBecomeHeadKeysAndTail) {
  auto t = ParsePromptTravel("masterpiece, 1girl\nsmile\n0: walking\n8: running\n8: jumping\nbest quality\n5: not a key", 16);
  ASSERT_TRUE(t.ok() && t->has_value());
  const auto& travel = **t;
  EXPECT_EQ(travel.head, (std::vector<std::string>{"masterpiece, 1girl", "smile"}));
  ASSERT_EQ(travel.keys.size(), 2u);
  EXPECT_EQ(travel.keys[1], (std::pair<int, std::string>{8, "jumping"}));  // a repeated frame takes the last text
  EXPECT_EQ(travel.tail, (std::vector<std::string>{"best quality", "5: not a key"}));  // after the keys: tail
  EXPECT_EQ(travel.KeyPrompt("walking"), "masterpiece, 1girl, smile, walking, best quality, 5: not a key");
  auto none = ParsePromptTravel("a plain prompt", 16);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto beyond = ParsePromptTravel("0: a\n16: b", 16);
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(beyond.status().message()), HasSubstr("frame 16"));
}

TEST(PromptTravelTest, SlerpIsTheGreatCircleAndLinearWhenParallel) {
  const at::Tensor e1 = at::tensor({1.0, 0.0}), e2 = at::tensor({0.0, 1.0});
  for (double t : {0.0, 0.25, 0.5, 1.0}) {
    const at::Tensor s = animatediff::Slerp(e1, e2, t);
    EXPECT_NEAR(s[0].item<double>(), std::cos(t * M_PI / 2), 1e-9);
    EXPECT_NEAR(s[1].item<double>(), std::sin(t * M_PI / 2), 1e-9);
  }
  const at::Tensor a = at::tensor({1.0, 0.0}), b = at::tensor({2.0, 0.001});
  EXPECT_TRUE(at::allclose(animatediff::Slerp(a, b, 0.3), 0.7 * a + 0.3 * b));
}

// Keys 0 and 8 of 16 frames, conditionings e1 and e2: frame i between them is at angle (i / 8)·90°; after the last
// key it stays e2 (open) or travels back to e1 across the wrap (closed).
TEST(PromptTravelTest, WorkedExampleOpenAndClosed) {
  auto travel = ParsePromptTravel("0: a\n8: b", 16);
  ASSERT_TRUE(travel.ok() && travel->has_value());
  const std::vector<at::Tensor> keys = {at::tensor({1.0, 0.0}), at::tensor({0.0, 1.0})};
  const auto open = animatediff::TravelConditionings(**travel, keys, 16, false);
  const auto closed = animatediff::TravelConditionings(**travel, keys, 16, true);
  ASSERT_EQ(open.size(), 16u);
  for (int i = 0; i < 16; ++i) {
    const double angle = open[static_cast<size_t>(i)][1].item<double>();
    EXPECT_NEAR(angle, i <= 8 ? std::sin(i / 8.0 * M_PI / 2) : 1.0, 1e-9) << "open frame " << i;
    const double back = closed[static_cast<size_t>(i)][0].item<double>();
    EXPECT_NEAR(back, i <= 8 ? std::cos(i / 8.0 * M_PI / 2) : std::sin((i - 8) / 8.0 * M_PI / 2), 1e-9) << "closed " << i;
  }
}

}  // namespace
}  // namespace atelier
