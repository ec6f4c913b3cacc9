// sd-webui-animatediff's prompt travel (scripts/animatediff_prompt.py): a positive prompt of head lines, then
// "N: text" keyframe lines (frame N gets "head, text, tail"), then tail lines. At the first denoiser call every
// frame's conditioning becomes the keyframes' — frames between two keys a spherical interpolation of the two
// (slerp over the whole tensor, weight = distance to the previous key / distance between the keys), frames before
// the first key the first key's and after the last the last's, or, for a closed loop, an interpolation between the
// last and the first key across the wrap.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::animatediff {

struct PromptTravel {
  std::vector<std::string> head, tail;
  std::vector<std::pair<int, std::string>> keys;  // in line order (a repeated frame keeps its place, takes the text)
  // "head, text, tail" of keyframe `text`, as the extension joins it.
  std::string KeyPrompt(const std::string& text) const;
};

// Nothing when the prompt has no "N: text" line. INVALID_ARGUMENT naming the frame when a key is not below
// `video_length`.
absl::StatusOr<std::optional<PromptTravel>> ParsePromptTravel(const std::string& prompt, int video_length);

// The extension's slerp of two tensors of the same shape (whole-tensor norms; linear when nearly parallel).
at::Tensor Slerp(const at::Tensor& v0, const at::Tensor& v1, double t);

// The conditioning of each of `frames` rows from the keyframes' (`key_conds[i]` for travel.keys[i]).
std::vector<at::Tensor> TravelConditionings(const PromptTravel& travel, const std::vector<at::Tensor>& key_conds,
                                            int frames, bool closed);

}  // namespace atelier::animatediff
