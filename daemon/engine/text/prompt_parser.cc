// A port of WebUI's prompt syntax. The reference uses Python regexes and a lark Earley grammar; this file uses small
// hand-written scanners that give the same results (see the notes in shared/fixtures/prompt-parser/case.json).
#include "engine/text/prompt_parser.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/charconv.h"
#include "absl/strings/str_cat.h"

namespace atelier::engine {
namespace {

// ---- Python `re` character classes on UTF-8 text ----------------------------------------------------------------

// Decodes the code point starting at s[i]; invalid bytes decode as themselves (never \s or \w) with length 1.
char32_t DecodeAt(absl::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  *len = 1;
  if (c < 0x80) return c;
  size_t n = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0xDC00 + c;  // a lone surrogate: neither space nor word
  char32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0xDC00 + c;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0xDC00 + c;
  *len = n;
  return cp;
}

// Decodes the code point that ends just before s[i] (i > 0).
char32_t DecodeBefore(absl::string_view s, size_t i, size_t* len) {
  if ((static_cast<unsigned char>(s[i - 1]) & 0xC0) != 0x80) return DecodeAt(s, i - 1, len);
  for (size_t back = 2; back <= 4 && back <= i; ++back) {
    if ((static_cast<unsigned char>(s[i - back]) & 0xC0) == 0x80) continue;
    size_t n;
    const char32_t cp = DecodeAt(s, i - back, &n);
    if (n == back) {
      *len = n;
      return cp;
    }
    break;
  }
  return DecodeAt(s, i - 1, len);
}

// Python's str.isspace(), which `\s` uses.
bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's `\w` (str.isalnum() or '_'): exact for ASCII; beyond ASCII every code point counts as a word character
// except spaces and the common punctuation / symbol / mark blocks below (so "猫AND犬" stays one part as in WebUI).
bool IsPyWord(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  static constexpr char32_t kNonWord[][2] = {
      {0x80, 0xA9},     {0xAB, 0xB1},       {0xB4, 0xB4},       {0xB6, 0xB8},     {0xBB, 0xBB},     {0xBF, 0xBF},
      {0xD7, 0xD7},     {0xF7, 0xF7},       {0x300, 0x36F},     {0x2000, 0x206F}, {0x20A0, 0x20FF}, {0x2190, 0x245F},
      {0x2500, 0x2775}, {0x2794, 0x2BFF},   {0x2E00, 0x2E7F},   {0x3000, 0x3004}, {0x3008, 0x3020}, {0x302A, 0x3030},
      {0x3036, 0x3037}, {0x303D, 0x303F},   {0x3099, 0x309C},   {0x30A0, 0x30A0}, {0x30FB, 0x30FB}, {0xD800, 0xDFFF},
      {0xFE00, 0xFE6F}, {0xFEFF, 0xFEFF},   {0xFF01, 0xFF0F},   {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65},
      {0xFFE0, 0xFFFF}, {0x1F000, 0x1FAFF}, {0xE0000, 0xE0FFF},
  };
  for (const auto& r : kNonWord) {
    if (c < r[0]) return true;
    if (c <= r[1]) return false;
  }
  return true;
}

bool WordBefore(absl::string_view s, size_t i) {
  size_t len;
  return i > 0 && IsPyWord(DecodeBefore(s, i, &len));
}
bool WordAt(absl::string_view s, size_t i) {
  size_t len;
  return i < s.size() && IsPyWord(DecodeAt(s, i, &len));
}
// `\b` at position i.
bool WordBoundary(absl::string_view s, size_t i) { return WordBefore(s, i) != WordAt(s, i); }

// Skips `\s*` forward from i.
size_t SkipSpace(absl::string_view s, size_t i) {
  size_t len;
  while (i < s.size() && IsPySpace(DecodeAt(s, i, &len))) i += len;
  return i;
}
// Moves i back over `\s*`, not below `floor`.
size_t SkipSpaceBack(absl::string_view s, size_t i, size_t floor) {
  size_t len;
  while (i > floor && IsPySpace(DecodeBefore(s, i, &len)) && i - len >= floor) i -= len;
  return i;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Python's `\d` and float() also take the other Unicode decimal digits (category Nd, e.g. fullwidth '１'); they all
// come in runs of ten from a zero. Returns the byte length of the digit at s[i] (0 if none) and its ASCII form.
size_t PyDigitAt(absl::string_view s, size_t i, char* ascii) {
  if (IsDigit(s[i])) {
    *ascii = s[i];
    return 1;
  }
  if (static_cast<unsigned char>(s[i]) < 0x80) return 0;
  static constexpr char32_t kZeros[] = {
      0x660,   0x6f0,   0x7c0,   0x966,   0x9e6,   0xa66,   0xae6,   0xb66,   0xbe6,   0xc66,   0xce6,
      0xd66,   0xde6,   0xe50,   0xed0,   0xf20,   0x1040,  0x1090,  0x17e0,  0x1810,  0x1946,  0x19d0,
      0x1a80,  0x1a90,  0x1b50,  0x1bb0,  0x1c40,  0x1c50,  0xa620,  0xa8d0,  0xa900,  0xa9d0,  0xa9f0,
      0xaa50,  0xabf0,  0xff10,  0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450,
      0x114d0, 0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0,
      0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0};
  size_t len;
  const char32_t c = DecodeAt(s, i, &len);
  for (char32_t zero : kZeros) {
    if (c < zero) return 0;
    if (c < zero + 10) {
      *ascii = static_cast<char>('0' + (c - zero));
      return len;
    }
  }
  return 0;
}

// Python float() of a string already known to be [+-]?digits/dots/exponent. Returns false where float() raises.
bool PyFloat(absl::string_view text, double* out) {
  absl::string_view body = text;
  bool negative = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    negative = body[0] == '-';
    body.remove_prefix(1);
  }
  if (body.empty() || !(IsDigit(body[0]) || body[0] == '.')) return false;  // from_chars would accept "inf"
  double v = 0;
  const auto result = absl::from_chars(body.data(), body.data() + body.size(), v);
  if (result.ptr != body.data() + body.size()) return false;
  if (result.ec == std::errc::invalid_argument) return false;
  if (result.ec == std::errc::result_out_of_range) v = std::fabs(v) >= 1 ? HUGE_VAL : 0.0;  // Python: inf / 0.0
  *out = negative ? -v : v;
  return true;
}

// ---- parse_prompt_attention ---------------------------------------------------------------------------------------

// The reference multiplies every entry from a bracket's start to the end of the list at each closing bracket.
// Entries are kept in blocks that have seen the same multiplications, so a closing bracket costs one multiplication
// per block instead of per entry; the values are still computed in the reference's order, so they are bit-exact.
class AttentionBuilder {
 public:
  size_t size() const { return entries_.size(); }
  bool exhausted() const { return work_ > kMaxWork; }

  void Append(absl::string_view text, bool is_break = false) {
    if (blocks_.empty() || !SameBits(blocks_.back().weight, 1.0)) blocks_.push_back({entries_.size(), 1.0});
    entries_.push_back({std::string(text), is_break});
  }

  // re.split(r"\s*\bBREAK\b\s*", text): each split point becomes the entry ("BREAK", -1).
  void AppendPlain(absl::string_view text) {
    size_t part_start = 0;
    size_t from = 0;
    while (true) {
      size_t b = text.find("BREAK", from);
      while (b != absl::string_view::npos && !(WordBoundary(text, b) && WordBoundary(text, b + 5))) {
        b = text.find("BREAK", b + 1);
      }
      if (b == absl::string_view::npos) break;
      const size_t match_start = SkipSpaceBack(text, b, part_start);
      Append(text.substr(part_start, match_start - part_start));
      Append(kBreakText, /*is_break=*/true);
      part_start = from = SkipSpace(text, b + 5);
    }
    Append(text.substr(part_start));
  }

  // multiply_range(start, multiplier).
  void MultiplyFrom(size_t start, double multiplier) {
    if (start >= entries_.size()) return;
    size_t k = blocks_.size() - 1;
    while (blocks_[k].begin > start) --k;
    if (blocks_[k].begin < start) {
      blocks_.insert(blocks_.begin() + k + 1, Block{start, blocks_[k].weight});
      ++k;
    }
    for (size_t j = k; j < blocks_.size(); ++j) blocks_[j].weight *= multiplier;
    work_ += blocks_.size() - k;
    // Blocks that now hold the same value behave identically from here on: merge them.
    size_t out = k > 0 ? k - 1 : 0;
    for (size_t j = out + 1; j < blocks_.size(); ++j) {
      if (!SameBits(blocks_[j].weight, blocks_[out].weight)) blocks_[++out] = blocks_[j];
    }
    blocks_.resize(out + 1);
  }

  std::vector<AttentionRun> Finish() const {
    std::vector<AttentionRun> runs;
    size_t block = 0;
    for (size_t i = 0; i < entries_.size(); ++i) {
      while (block + 1 < blocks_.size() && blocks_[block + 1].begin <= i) ++block;
      const double w = blocks_[block].weight;
      // -1 * m1 * m2 ... equals -(1 * m1 * m2 ...) bit for bit: IEEE rounding is symmetric in sign.
      const double weight = entries_[i].is_break ? -w : w;
      // Merge runs of identical weights (Python ==, so 0.0 and -0.0 merge, NaN never does).
      if (!runs.empty() && runs.back().weight == weight) {
        runs.back().text += entries_[i].text;
      } else {
        runs.push_back({entries_[i].text, weight});
      }
    }
    if (runs.empty()) runs.push_back({"", 1.0});
    return runs;
  }

 private:
  static constexpr uint64_t kMaxWork = 20'000'000;  // ~0.1 s; real prompts need a few thousand
  struct Entry {
    std::string text;
    bool is_break;
  };
  struct Block {
    size_t begin;  // first entry; the block runs to the next block's begin
    double weight;
  };
  static bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

  std::vector<Entry> entries_;
  std::vector<Block> blocks_;
  uint64_t work_ = 0;
};

// ---- get_learned_conditioning_prompt_schedules --------------------------------------------------------------------
//
// Structure of the lark grammar, and why a bracket matcher reproduces it:
//  - Inside a `prompt`, '(' ')' '[' ']' ':' '|' appear only as parts of emphasized / scheduled / alternate nodes,
//    so a bracket pair is a node iff its content is balanced, every nested pair is a node, and the separators at its
//    own level fit one rule: '(' with at most one ':'; '[' with nothing (emphasis), only '|'s (alternation), or one
//    or two ':' followed by [WS] NUMBER [WS] (scheduled). Such a parse is unique, and such pairs never overlap.
//  - At the top level `start` also accepts single '[' ']' '(' ')' ':' tokens, so pairs that are not nodes are
//    literal text; '|' has no literal form, and a backslash must escape a character, so those fail the parse.
//  - Where the Earley parser could read a node also as literal tokens, it prefers the node (lower rule order), except
//    for ties that depend on Python's string hash seed (a node directly followed by a literal bracket or ':'), where
//    we also keep the node. Emphasis keeps its brackets in the output, so only scheduled / alternate nodes matter.

struct Span {
  size_t begin, end;
};

struct ScheduleNode {
  bool alternate;
  size_t end;                // one past the closing ']'
  std::vector<Span> parts;   // alternate: the options; scheduled: {after} or {before, after}
  absl::string_view number;  // scheduled: the NUMBER token
  int when = 0;
};

// lark's SIGNED_NUMBER at s[i] as Python's re.match would take it (alternatives in lark's order: INT _EXP,
// DECIMAL _EXP?, INT). Returns the end of the match, or i when there is none.
size_t MatchSignedNumber(absl::string_view s, size_t i) {
  const auto digits = [&](size_t k) {
    while (k < s.size() && IsDigit(s[k])) ++k;
    return k;
  };
  const auto exponent = [&](size_t k) {  // end of ("e"|"E") SIGNED_INT at k, or k
    if (k >= s.size() || (s[k] != 'e' && s[k] != 'E')) return k;
    size_t j = k + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    const size_t e = digits(j);
    return e > j ? e : k;
  };
  size_t p = i;
  if (p < s.size() && (s[p] == '+' || s[p] == '-')) ++p;
  const size_t int_end = digits(p);
  if (int_end > p) {
    const size_t exp_end = exponent(int_end);
    if (exp_end > int_end) return exp_end;
    if (int_end < s.size() && s[int_end] == '.') return exponent(digits(int_end + 1));
    return int_end;
  }
  if (p < s.size() && s[p] == '.') {
    const size_t frac_end = digits(p + 1);
    if (frac_end > p + 1) return exponent(frac_end);
  }
  return i;
}

struct ParsedSchedule {
  std::vector<ScheduleNode> nodes;
  std::vector<int32_t> node_at;  // per byte: index of the scheduled / alternate node opening there, or -1
};

// Finds the scheduled and alternate nodes, or returns false where lark fails to parse the prompt.
bool ParseScheduleStructure(absl::string_view s, ParsedSchedule* out) {
  struct Frame {
    size_t open;
    char kind;                 // '(' or '['
    std::vector<size_t> seps;  // ':' and '|' at this frame's own level
    int colons = 0, pipes = 0;
    bool bad = false;  // a nested pair is not a node
  };
  std::vector<Frame> stack;
  const auto drop_all = [&]() {  // these openers can never be closed: they are literal top-level tokens
    for (const Frame& f : stack) {
      if (f.pipes > 0) return false;
    }
    stack.clear();
    return true;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\') {
      if (i + 1 >= s.size() || s[i + 1] == '\n') return false;  // plain's \\. needs a character (not newline)
      ++i;
    } else if (c == '(' || c == '[') {
      stack.push_back(Frame{i, c, {}});
    } else if (c == ':' || c == '|') {
      if (stack.empty()) {
        if (c == '|') return false;
        continue;
      }
      stack.back().seps.push_back(i);
      (c == ':' ? stack.back().colons : stack.back().pipes)++;
    } else if (c == ')' || c == ']') {
      if (stack.empty() || stack.back().kind != (c == ')' ? '(' : '[')) {
        if (!drop_all()) return false;
        continue;
      }
      Frame f = std::move(stack.back());
      stack.pop_back();
      bool node = !f.bad;
      if (node && f.kind == '(') {
        node = f.pipes == 0 && f.colons <= 1;
      } else if (node && f.colons == 0 && f.pipes > 0) {
        ScheduleNode alt{true, i + 1, {}, {}};
        size_t begin = f.open + 1;
        for (size_t sep : f.seps) {
          alt.parts.push_back({begin, sep});
          begin = sep + 1;
        }
        alt.parts.push_back({begin, i});
        out->node_at[f.open] = static_cast<int32_t>(out->nodes.size());
        out->nodes.push_back(std::move(alt));
      } else if (node && f.pipes == 0 && (f.colons == 1 || f.colons == 2)) {
        // ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
        const size_t num_begin = SkipSpace(s, f.seps.back() + 1);
        const size_t num_end = MatchSignedNumber(s, num_begin);
        node = num_end > num_begin && SkipSpace(s, num_end) == i;
        if (node) {
          ScheduleNode sched{false, i + 1, {}, s.substr(num_begin, num_end - num_begin)};
          if (f.colons == 2) sched.parts.push_back({f.open + 1, f.seps[0]});
          const size_t after = f.colons == 2 ? f.seps[0] + 1 : f.open + 1;
          sched.parts.push_back({after, f.seps[f.colons - 1]});
          out->node_at[f.open] = static_cast<int32_t>(out->nodes.size());
          out->nodes.push_back(std::move(sched));
        }
      } else if (node) {
        node = f.colons == 0 && f.pipes == 0;  // [emphasis]
      }
      if (!node) {
        if (f.pipes > 0) return false;  // its '|' would be a top-level token
        if (!stack.empty()) stack.back().bad = true;
      }
    }
  }
  return drop_all();
}

// The prompt as it reads at `step`: scheduled nodes replaced by before/after, alternations by one option. Iterative:
// the stack holds, for each entered part, where it ends and where to resume (after the node's ']').
std::string RenderAtStep(absl::string_view s, const ParsedSchedule& parsed, int step) {
  std::string out;
  out.reserve(s.size());
  std::vector<std::pair<size_t, size_t>> stack;
  size_t pos = 0;
  while (true) {
    if (!stack.empty() && pos == stack.back().first) {
      pos = stack.back().second;
      stack.pop_back();
      continue;
    }
    if (pos >= s.size()) break;
    const int32_t id = parsed.node_at[pos];
    if (id < 0) {
      out.push_back(s[pos++]);
      continue;
    }
    const ScheduleNode& node = parsed.nodes[id];
    const Span* part = nullptr;
    if (node.alternate) {
      // option[(step - 1) % n] with Python's modulo (non-negative for a positive divisor).
      const int64_t n = static_cast<int64_t>(node.parts.size());
      part = &node.parts[static_cast<size_t>(((static_cast<int64_t>(step) - 1) % n + n) % n)];
    } else if (step > node.when) {
      part = &node.parts.back();
    } else if (node.parts.size() == 2) {
      part = &node.parts.front();
    }
    if (part == nullptr) {
      pos = node.end;
    } else {
      stack.emplace_back(part->end, node.end);
      pos = part->begin;
    }
  }
  return out;
}

// `when` of a scheduled node: int() of the NUMBER (fractions of `steps` where it has a '.'), capped at steps.
int ScheduledWhen(absl::string_view number, int steps, int int_offset, double flt_offset) {
  double v = 0;
  if (!PyFloat(number, &v)) return steps;  // cannot happen: the grammar only admits valid numbers
  if (number.find('.') != absl::string_view::npos) {
    v = (v - flt_offset) * steps;
  } else {
    v = v - int_offset;
  }
  // Python raises on int(inf) / int(nan) (WebUI fails the job); we cap instead.
  if (std::isnan(v) || v >= steps) return steps;
  // int() truncates toward zero, as the cast does.
  return std::min(steps, v <= -1e9 ? -1'000'000'000 : static_cast<int>(v));
}

// re_weight on one AND part: ^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$
// The lazy text group ends where the optional weight, if it matches up to the end, begins.
WeightedPrompt SplitWeight(absl::string_view part) {
  const size_t end = SkipSpaceBack(part, part.size(), 0);
  size_t num_begin = end;
  std::string body;  // the number's digits and dot, reversed, in ASCII
  while (num_begin > 0) {
    if (part[num_begin - 1] == '.') {
      body.push_back('.');
      --num_begin;
      continue;
    }
    size_t len;
    DecodeBefore(part, num_begin, &len);
    char ascii = 0;
    if (PyDigitAt(part, num_begin - len, &ascii) != len) break;
    body.push_back(ascii);
    num_begin -= len;
  }
  const size_t dots = std::count(body.begin(), body.end(), '.');
  if (!body.empty() && dots <= 1 && body.size() > dots) {
    if (num_begin > 0 && (part[num_begin - 1] == '+' || part[num_begin - 1] == '-')) {
      --num_begin;
      body.push_back(part[num_begin]);
    }
    std::reverse(body.begin(), body.end());
    const size_t colon = SkipSpaceBack(part, num_begin, 0);
    double weight;
    if (colon > 0 && part[colon - 1] == ':' && PyFloat(body, &weight)) {
      const size_t text_end = SkipSpaceBack(part, colon - 1, 0);
      return {std::string(part.substr(0, text_end)), weight};
    }
  }
  return {std::string(part.substr(0, end)), 1.0};
}

}  // namespace

absl::StatusOr<std::vector<AttentionRun>> ParsePromptAttention(absl::string_view text) {
  static constexpr double kRound = 1.1;
  static constexpr double kSquare = 1 / 1.1;
  AttentionBuilder res;
  std::vector<size_t> round, square;
  const auto is_special = [](char c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; };
  size_t i = 0;
  while (i < text.size()) {
    if (res.exhausted()) {
      return absl::ResourceExhaustedError("prompt emphasis is nested too deeply to evaluate");
    }
    const char c = text[i];
    if (c == '\\') {
      const bool escape =
          i + 1 < text.size() && absl::string_view("()[]\\").find(text[i + 1]) != absl::string_view::npos;
      res.Append(escape ? text.substr(i + 1, 1) : absl::string_view());  // a lone backslash appends ""
      i += escape ? 2 : 1;
    } else if (c == '(') {
      round.push_back(res.size());
      ++i;
    } else if (c == '[') {
      square.push_back(res.size());
      ++i;
    } else if (c == ':') {
      // :\s*([+-]?[.\d]+)\s*\)
      const size_t w_begin = SkipSpace(text, i + 1);
      size_t w_end = w_begin;
      std::string ascii;  // the weight with ASCII digits, for float()
      if (w_end < text.size() && (text[w_end] == '+' || text[w_end] == '-')) ascii.push_back(text[w_end++]);
      const size_t digits = w_end;
      while (w_end < text.size()) {
        char digit = '.';
        const size_t len = text[w_end] == '.' ? 1 : PyDigitAt(text, w_end, &digit);
        if (len == 0) break;
        ascii.push_back(digit);
        w_end += len;
      }
      const size_t close = SkipSpace(text, w_end);
      if (w_end > digits && close < text.size() && text[close] == ')') {
        const absl::string_view weight = text.substr(w_begin, w_end - w_begin);
        if (!round.empty()) {
          double w;
          if (!PyFloat(ascii, &w)) {
            return absl::InvalidArgumentError(
                absl::StrCat("could not convert emphasis weight '", weight.substr(0, 40), "' to a number"));
          }
          res.MultiplyFrom(round.back(), w);
          round.pop_back();
        } else {
          res.AppendPlain(text.substr(i, close + 1 - i));
        }
        i = close + 1;
      } else {
        res.AppendPlain(":");
        ++i;
      }
    } else if (c == ')' && !round.empty()) {
      res.MultiplyFrom(round.back(), kRound);
      round.pop_back();
      ++i;
    } else if (c == ']' && !square.empty()) {
      res.MultiplyFrom(square.back(), kSquare);
      square.pop_back();
      ++i;
    } else if (c == ')' || c == ']') {
      res.AppendPlain(text.substr(i, 1));
      ++i;
    } else {
      size_t j = i;
      while (j < text.size() && !is_special(text[j])) ++j;
      res.AppendPlain(text.substr(i, j - i));
      i = j;
    }
  }
  for (size_t pos : round) res.MultiplyFrom(pos, kRound);
  for (size_t pos : square) res.MultiplyFrom(pos, kSquare);
  if (res.exhausted()) return absl::ResourceExhaustedError("prompt emphasis is nested too deeply to evaluate");
  return res.Finish();
}

std::vector<ScheduleEntry> GetPromptSchedules(absl::string_view prompt, int steps, std::optional<int> hires_steps) {
  int int_offset = 0;
  double flt_offset = 0;
  if (hires_steps.has_value()) {
    int_offset = steps;
    flt_offset = 1.0;
    steps = *hires_steps;
  }
  ParsedSchedule parsed;
  parsed.node_at.assign(prompt.size(), -1);
  if (!ParseScheduleStructure(prompt, &parsed) || parsed.nodes.empty()) {
    return {ScheduleEntry{steps, std::string(prompt)}};
  }
  std::vector<int> at_steps = {steps};
  bool alternates = false;
  for (ScheduleNode& node : parsed.nodes) {
    if (node.alternate) {
      alternates = true;
      continue;
    }
    node.when = ScheduledWhen(node.number, steps, int_offset, flt_offset);
    if (node.when >= 1) at_steps.push_back(node.when);
  }
  for (int64_t t = 1; alternates && t <= steps; ++t) at_steps.push_back(static_cast<int>(t));
  std::sort(at_steps.begin(), at_steps.end());
  at_steps.erase(std::unique(at_steps.begin(), at_steps.end()), at_steps.end());

  std::vector<ScheduleEntry> schedule;
  schedule.reserve(at_steps.size());
  for (int t : at_steps) schedule.push_back({t, RenderAtStep(prompt, parsed, t)});
  return schedule;
}

std::vector<WeightedPrompt> GetMulticondPromptList(absl::string_view prompt) {
  // re.split(r"\bAND\b", prompt)
  std::vector<WeightedPrompt> parts;
  size_t part_start = 0;
  for (size_t b = prompt.find("AND"); b != absl::string_view::npos; b = prompt.find("AND", b + 1)) {
    if (!WordBoundary(prompt, b) || !WordBoundary(prompt, b + 3)) continue;
    parts.push_back(SplitWeight(prompt.substr(part_start, b - part_start)));
    part_start = b + 3;
    b += 2;
  }
  parts.push_back(SplitWeight(prompt.substr(part_start)));
  return parts;
}

MulticondBatch GetMulticondPromptLists(const std::vector<std::string>& prompts) {
  MulticondBatch batch;
  std::map<std::string, int> index_of;
  for (const std::string& prompt : prompts) {
    auto& indexes = batch.indexes.emplace_back();
    for (WeightedPrompt& part : GetMulticondPromptList(prompt)) {
      auto [it, inserted] = index_of.try_emplace(part.text, static_cast<int>(batch.flat_list.size()));
      if (inserted) batch.flat_list.push_back(std::move(part.text));
      indexes.emplace_back(it->second, part.weight);
    }
  }
  return batch;
}

std::string StripExtraNetworkTags(absl::string_view prompt, std::vector<ExtraNetworkTag>* tags) {
  // re.sub(r"<(\w+):([^>]+)>", "", prompt). The next '>' is found once per position so that a prompt full of
  // unterminated '<' stays linear.
  std::string out;
  out.reserve(prompt.size());
  size_t next_gt = prompt.find('>');
  size_t i = 0;
  while (i < prompt.size()) {
    if (prompt[i] == '<') {
      size_t j = i + 1;
      size_t len;
      while (j < prompt.size() && IsPyWord(DecodeAt(prompt, j, &len))) j += len;
      if (next_gt != absl::string_view::npos && next_gt < j) next_gt = prompt.find('>', j);
      if (j > i + 1 && j < prompt.size() && prompt[j] == ':' && next_gt != absl::string_view::npos && next_gt > j + 1) {
        if (tags != nullptr) {
          ExtraNetworkTag tag{std::string(prompt.substr(i + 1, j - i - 1)), {}};
          absl::string_view args = prompt.substr(j + 1, next_gt - j - 1);
          for (size_t colon; (colon = args.find(':')) != absl::string_view::npos; args.remove_prefix(colon + 1)) {
            tag.args.emplace_back(args.substr(0, colon));
          }
          tag.args.emplace_back(args);
          tags->push_back(std::move(tag));
        }
        i = next_gt + 1;
        next_gt = prompt.find('>', i);
        continue;
      }
    }
    out.push_back(prompt[i++]);
  }
  return out;
}

}  // namespace atelier::engine
