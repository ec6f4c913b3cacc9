#include "context_schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace atelier::animatediff {
namespace {

int Mod(int64_t a, int64_t m) { return static_cast<int>(((a % m) + m) % m); }

// [e % L for e in range(begin, end, step)]
std::vector<int> Range(int64_t begin, int64_t end, int64_t step, int frames) {
  std::vector<int> out;
  for (int64_t e = begin; e < end; e += step) out.push_back(Mod(e, frames));
  return out;
}

}  // namespace

absl::StatusOr<ClosedLoop> ParseClosedLoop(const std::string& text) {
  if (text == "N") return ClosedLoop::kN;
  if (text == "R-P") return ClosedLoop::kRMinusP;
  if (text == "R+P") return ClosedLoop::kRPlusP;
  if (text == "A") return ClosedLoop::kA;
  return absl::InvalidArgumentError(absl::StrCat("closed_loop '", text.substr(0, 16), "' is not one of N, R-P, R+P, A"));
}

const char* ClosedLoopName(ClosedLoop loop) {
  switch (loop) {
    case ClosedLoop::kN: return "N";
    case ClosedLoop::kRMinusP: return "R-P";
    case ClosedLoop::kRPlusP: return "R+P";
    case ClosedLoop::kA: return "A";
  }
  return "?";
}

double OrderedHalving(uint64_t step) {
  uint64_t reversed = 0;
  for (int i = 0; i < 64; ++i) reversed |= ((step >> i) & 1ULL) << (63 - i);
  return static_cast<double>(reversed) / 18446744073709551616.0;
}

std::vector<std::vector<int>> ContextWindows(uint64_t step, int frames, int context, int stride, int overlap,
                                             ClosedLoop loop) {
  std::vector<std::vector<int>> out;
  if (frames <= context) {
    std::vector<int> all;
    for (int i = 0; i < context; ++i) all.push_back(i);
    out.push_back(all);
    return out;
  }
  const bool closed = loop == ClosedLoop::kA;
  stride = std::min(stride, static_cast<int>(std::ceil(std::log2(static_cast<double>(frames) / context))) + 1);
  const double oh = OrderedHalving(step);
  for (int s = 0; s < stride; ++s) {
    const int64_t cs = int64_t{1} << s;
    const auto pad = static_cast<int64_t>(std::nearbyint(frames * oh));  // Python round: half to even
    bool both = false;
    const int64_t begin = static_cast<int64_t>(oh * static_cast<double>(cs)) + pad;
    const int64_t end = frames + pad + (closed ? 0 : -overlap);
    const int64_t step_by = context * cs - overlap;
    if (step_by <= 0) break;
    for (int64_t j = begin; j < end; j += step_by) {
      if (loop == ClosedLoop::kN && cs == 1) {
        const std::vector<int> cur = Range(j, j + context * cs, cs, frames);
        const std::vector<int> first = Range(0, context * cs, cs, frames);
        const std::vector<int> last = Range(frames - context * cs, frames, cs, frames);
        int u = -1;
        for (size_t i = 1; i < cur.size() && u < 0; ++i) {
          if (cur[i] < cur[i - 1]) u = static_cast<int>(i);
        }
        if (u < 0) {
          out.push_back(cur);
        } else if (both) {
          both = false;
          out.push_back(first);
        } else if (u < context - overlap) {
          out.push_back(last);
          out.push_back(first);
        } else {
          both = true;
          out.push_back(last);
        }
      } else {
        out.push_back(Range(j, j + context * cs, cs, frames));
      }
    }
  }
  return out;
}

}  // namespace atelier::animatediff
