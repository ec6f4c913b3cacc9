// Fuzzes WebUI's prompt syntax (emphasis, schedules with and without hires fix, the AND split, extra-network tags)
// with arbitrary bytes. Every function must return without crashing, recursing without bound, or taking
// quadratic-plus time; schedules must be non-empty, sorted, and end at the schedule's step count.
#include <cstddef>
#include <cstdint>

#include "engine/text/prompt_parser.h"

namespace {

void CheckSchedule(const std::vector<atelier::engine::ScheduleEntry>& schedule, int steps) {
  if (schedule.empty() || schedule.back().end_at_step != steps) __builtin_trap();
  for (size_t i = 1; i < schedule.size(); ++i) {
    if (schedule[i - 1].end_at_step >= schedule[i].end_at_step) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace atelier::engine;
  const absl::string_view prompt(reinterpret_cast<const char*>(data), size);
  auto attention = ParsePromptAttention(prompt);
  if (attention.ok() && attention->empty()) __builtin_trap();
  CheckSchedule(GetPromptSchedules(prompt, 20), 20);
  CheckSchedule(GetPromptSchedules(prompt, 20, 10), 10);
  const auto parts = GetMulticondPromptList(prompt);
  if (parts.empty()) __builtin_trap();
  // The positive-prompt pipeline: every part is scheduled and every schedule text weighted.
  for (const auto& part : parts) {
    for (const auto& entry : GetPromptSchedules(part.text, 20)) (void)ParsePromptAttention(entry.text);
  }
  std::vector<ExtraNetworkTag> tags;
  if (StripExtraNetworkTags(prompt, &tags).size() > size) __builtin_trap();
  return 0;
}
