#include "prompt_travel.h"

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace atelier::animatediff {

std::string PromptTravel::KeyPrompt(const std::string& text) const {
  return absl::StrCat(absl::StrJoin(head, ", "), ", ", text, ", ", absl::StrJoin(tail, ", "));
}

absl::StatusOr<std::optional<PromptTravel>> ParsePromptTravel(const std::string& prompt, int video_length) {
  static const std::regex kKeyStart(R"(^\d+:.*)");
  static const std::regex kKey(R"(^(\d+): (.+)$)");
  PromptTravel travel;
  enum { kHead, kKeys, kTail } mode = kHead;
  const std::string text(absl::StripAsciiWhitespace(prompt));
  for (absl::string_view piece : absl::StrSplit(text, '\n')) {
    const std::string line(piece);
    if (mode == kHead) {
      if (std::regex_match(line, kKeyStart)) {
        mode = kKeys;
      } else {
        travel.head.push_back(line);
        continue;
      }
    }
    if (mode == kKeys) {
      std::smatch m;
      if (std::regex_match(line, m, kKey)) {
        const std::string digits = m[1].str();
        if (digits.size() > 6 || std::stoi(digits) >= video_length) {
          return absl::InvalidArgumentError(absl::StrCat("prompt travel frame ", digits.substr(0, 8),
                                                         " is beyond the video (video_length ", video_length, ")"));
        }
        const int frame = std::stoi(digits);
        bool replaced = false;
        for (auto& [f, t] : travel.keys) {
          if (f == frame) {
            t = m[2].str();
            replaced = true;
          }
        }
        if (!replaced) travel.keys.emplace_back(frame, m[2].str());
        continue;
      }
      mode = kTail;
    }
    travel.tail.push_back(line);
  }
  if (travel.keys.empty()) return std::optional<PromptTravel>();
  return std::optional<PromptTravel>(std::move(travel));
}

at::Tensor Slerp(const at::Tensor& v0, const at::Tensor& v1, double t) {
  const at::Tensor u0 = v0 / v0.norm(), u1 = v1 / v1.norm();
  const double dot = (u0 * u1).sum().item<double>();
  if (std::fabs(dot) > 0.9995) return (1 - t) * v0 + t * v1;
  const double omega = std::acos(dot);
  return (std::sin((1 - t) * omega) * v0 + std::sin(t * omega) * v1) / std::sin(omega);
}

std::vector<at::Tensor> TravelConditionings(const PromptTravel& travel, const std::vector<at::Tensor>& key_conds,
                                            int frames, bool closed) {
  std::map<int, size_t> slot;  // frame -> its key's conditioning
  for (size_t i = 0; i < travel.keys.size(); ++i) slot[travel.keys[i].first] = i;
  const int first = travel.keys.front().first, last = travel.keys.back().first;
  std::vector<at::Tensor> out;
  for (int i = 0; i < frames; ++i) {
    int prev = closed ? last : first, next = closed ? first : last;
    for (const auto& [k, unused] : travel.keys) {
      if (k > i) {
        next = k;
        break;
      }
      prev = k;
    }
    int dp = i - prev, dn = next - i;
    if (dp < 0) dp += frames;
    if (dn < 0) dn += frames;
    if (prev == next || dp + dn == 0) {
      out.push_back(key_conds[slot[prev]]);
    } else {
      out.push_back(Slerp(key_conds[slot[prev]], key_conds[slot[next]], static_cast<double>(dp) / (dp + dn)));
    }
  }
  return out;
}

}  // namespace atelier::animatediff
