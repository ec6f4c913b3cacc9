// WebUI's prompt syntax (modules/prompt_parser.py and extra_networks.parse_prompt of stable-diffusion-webui v1.10.1):
// emphasis weights, prompt editing / alternation schedules, the composable "AND" split, and extra-network tags.
// Every function accepts arbitrary bytes (malformed brackets, deep nesting, NUL, invalid UTF-8) and works
// without recursion in at most O(n^2) time.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atelier::engine {

// One run of parse_prompt_attention. A chunk break is the run {"BREAK", -1.0} (kBreakText, kBreakWeight); an
// enclosing bracket multiplies that weight too, after which it is no longer a break but the literal word.
struct AttentionRun {
  std::string text;
  double weight;
};
inline constexpr char kBreakText[] = "BREAK";
inline constexpr double kBreakWeight = -1.0;

// parse_prompt_attention: (x) x1.1, [x] x(1/1.1), (x:w) xw, \( \) \[ \] \\ literals, unclosed brackets closed at
// the end, "BREAK" markers, adjacent runs of equal weight merged; weights bit-identical to the reference. Errors:
// InvalidArgument where Python's float() fails on a "(x:w)" weight (e.g. "1.2.3"), ResourceExhausted for absurdly
// nested input whose exact weights would cost more than ~2*10^7 multiplications (thousands of levels, each with text).
absl::StatusOr<std::vector<AttentionRun>> ParsePromptAttention(absl::string_view text);

// One entry of get_learned_conditioning_prompt_schedules: `text` is used for sampling steps <= end_at_step.
struct ScheduleEntry {
  int end_at_step;
  std::string text;
  bool operator==(const ScheduleEntry& o) const { return end_at_step == o.end_at_step && text == o.text; }
};

// get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps)[0]: resolves [from:to:when], [to:when],
// [from::when] and [a|b|c]. With hires_steps (the hires-fix pass) the schedule spans hires_steps steps, integer
// `when`s are offset by `steps` and fractional ones by 1.0. A prompt the grammar rejects (a '|' outside an
// alternation, a trailing backslash) gives {{steps, prompt}}.
std::vector<ScheduleEntry> GetPromptSchedules(absl::string_view prompt, int steps,
                                              std::optional<int> hires_steps = std::nullopt);

// One part of the composable-diffusion split: "a cat :1.2 AND a dog" -> {"a cat", 1.2}, {" a dog", 1.0}.
struct WeightedPrompt {
  std::string text;
  double weight;
};

// The per-prompt split of get_multicond_prompt_list: split on the word AND, then an optional trailing ":weight"
// per part (the text keeps leading and loses trailing whitespace).
std::vector<WeightedPrompt> GetMulticondPromptList(absl::string_view prompt);

// get_multicond_prompt_list over a batch: identical part texts share one entry of flat_list;
// indexes[i] lists (index into flat_list, weight) for each part of prompts[i].
struct MulticondBatch {
  std::vector<std::vector<std::pair<int, double>>> indexes;
  std::vector<std::string> flat_list;
};
MulticondBatch GetMulticondPromptLists(const std::vector<std::string>& prompts);

// An extra-network tag <name:arg1:arg2...> (e.g. <lora:name:0.8>); args is the text after the first ':' split on ':'.
struct ExtraNetworkTag {
  std::string name;
  std::vector<std::string> args;
};

// extra_networks.parse_prompt: removes every tag matching <(\w+):([^>]+)> and returns the rest of the prompt;
// the tags found are appended to *tags when given.
std::string StripExtraNetworkTags(absl::string_view prompt, std::vector<ExtraNetworkTag>* tags = nullptr);

}  // namespace atelier::engine
