// sd-webui-animatediff's context windows against fixtures/context-schedule (every setting and step it lists,
// exact): the windows in order, which window writes each frame last, and the ordered-halving offsets.
#include <gtest/gtest.h>

#include "context_schedule.h"
#include "fixture_case.h"

namespace atelier {
namespace {

TEST(ContextScheduleTest, EveryListedSettingAndStepIsExact) {
  int checked = 0;
  for (const auto& c : testing::CasesOf("context-schedule")) {
    SCOPED_TRACE(c.dir.string());
    ASSERT_TRUE(c.values.contains("cases"));
    for (const auto& s : c.values["cases"]) {
      const int frames = s["video_length"].get<int>(), context = s["batch_size"].get<int>();
      auto loop = animatediff::ParseClosedLoop(s["closed_loop"].get<std::string>());
      ASSERT_TRUE(loop.ok());
      for (const auto& p : s["per_step"]) {
        const uint64_t step = p["step"].get<uint64_t>();
        SCOPED_TRACE(::testing::Message() << frames << " frames, context " << context << ", " << s["closed_loop"]
                                        << ", step " << step);
        EXPECT_DOUBLE_EQ(animatediff::OrderedHalving(step), p["ordered_halving"].get<double>());
        const auto windows = animatediff::ContextWindows(step, frames, context, s["stride"].get<int>(),
                                                         s["overlap_resolved"].get<int>(), *loop);
        EXPECT_EQ(windows, p["windows"].get<std::vector<std::vector<int>>>());
        // The last window to cover a frame writes it.
        const auto& want = p["final_writer"];
        std::vector<nlohmann::json> writer(want.size(), nullptr);
        for (size_t w = 0; w < windows.size(); ++w) {
          for (size_t i = 0; i < windows[w].size(); ++i) {
            const auto f = static_cast<size_t>(windows[w][i]);
            if (f < writer.size()) writer[f] = nlohmann::json::array({w, i});
          }
        }
        EXPECT_EQ(nlohmann::json(writer), want);
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
  EXPECT_FALSE(animatediff::ParseClosedLoop("B").ok());
}

}  // namespace
}  // namespace atelier
