#include "util/infotext_text.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace atelier {
namespace {


// The line as code points with their byte offsets (offsets.back() == the byte length), so the scan classifies
// characters as Python's str regex does.
struct Line {
  std::vector<UChar32> cp;
  std::vector<size_t> offset;
};
Line Decode(absl::string_view s) {
  Line line;
  int32_t i = 0;
  const int32_t n = static_cast<int32_t>(s.size());
  while (i < n) {
    line.offset.push_back(static_cast<size_t>(i));
    UChar32 c;
    U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), i, n, c);
    line.cp.push_back(c < 0 ? 0xFFFD : c);
  }
  line.offset.push_back(s.size());
  return line;
}

// Python's \w (str.isalnum() or '_') and \s (str.isspace()).
bool IsWord(UChar32 c) {
  if (c < 0x80) return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  return u_isalpha(c) || u_getNumericValue(c) != U_NO_NUMERIC_VALUE;
}
bool IsKeyChar(UChar32 c) { return IsWord(c) || c == ' ' || c == '-' || c == '/'; }
bool IsSpace(UChar32 c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  return u_isUWhiteSpace(c) || c == 0x85;
}

// One attempt of re_param = \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$) at code point `pos`: the
// match end, or npos with *resume set to where the next attempt can start (every start before it fails alike,
// which keeps the scan linear).
size_t MatchParam(const Line& line, absl::string_view s, size_t pos, std::string* key, std::string* value,
                  size_t* resume) {
  const auto& c = line.cp;
  const size_t n = c.size();
  size_t i = pos;
  while (i < n && IsSpace(c[i])) ++i;
  if (i >= n || !IsWord(c[i])) {
    *resume = std::max(pos + 1, i);
    return absl::string_view::npos;
  }
  const size_t key_start = i++;
  while (i < n && IsKeyChar(c[i])) ++i;
  // The key run cannot contain ':', so backtracking into it never finds one: the run must be followed by ':'. A
  // later start inside the run ends at the same place and fails the same way.
  if (i - key_start < 2 || i >= n || c[i] != ':') {
    *resume = std::max(pos + 1, i);
    return absl::string_view::npos;
  }
  *key = std::string(s.substr(line.offset[key_start], line.offset[i] - line.offset[key_start]));
  ++i;
  while (i < n && IsSpace(c[i])) ++i;
  // Quoted alternative first: "(?:\\.|[^\\"])+" followed by ',' or the end.
  if (i < n && c[i] == '"') {
    size_t j = i + 1;
    bool ok = false;
    while (j < n) {
      if (c[j] == '\\' && j + 1 < n) {
        j += 2;
      } else if (c[j] == '"') {
        ok = j > i + 1;
        break;
      } else if (c[j] == '\\') {
        break;
      } else {
        ++j;
      }
    }
    if (ok && (j + 1 == n || c[j + 1] == ',')) {
      *value = std::string(s.substr(line.offset[i], line.offset[j + 1] - line.offset[i]));
      return j + 1 == n ? j + 1 : j + 2;
    }
  }
  // [^,]* then ',' or the end.
  size_t end = i;
  while (end < n && c[end] != ',') ++end;
  *value = std::string(s.substr(line.offset[i], line.offset[end] - line.offset[i]));
  return end == n ? end : end + 1;
}

// WebUI's unquote: a JSON string literal becomes its value; anything else stays.
std::string Unquote(const std::string& text) {
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') return text;
  const nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_string() ? parsed.get<std::string>() : text;
}

// "^(\d+)x(\d+)$"
bool SplitSize(const std::string& v, std::string* a, std::string* b) {
  const size_t x = v.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == v.size()) return false;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i != x && !absl::ascii_isdigit(static_cast<unsigned char>(v[i]))) return false;
  }
  *a = v.substr(0, x);
  *b = v.substr(x + 1);
  return true;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> InfotextPairs(absl::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  const Line line = Decode(text);
  size_t pos = 0;
  while (pos < line.cp.size()) {
    std::string key, value;
    size_t resume = pos + 1;
    const size_t end = MatchParam(line, text, pos, &key, &value, &resume);
    if (end == absl::string_view::npos) {
      pos = resume;  // findall tries the next start
      continue;
    }
    // WebUI reads v[0] of each value: an empty one raises and the pair is skipped.
    if (!value.empty()) out.emplace_back(std::move(key), Unquote(value));
    pos = end;  // a match always consumes a key of two or more characters
  }
  return out;
}

InfotextText SplitInfotextText(absl::string_view text) {
  InfotextText out;
  std::vector<std::string> lines = absl::StrSplit(absl::StripAsciiWhitespace(text), '\n');
  std::string last = lines.back();
  lines.pop_back();
  auto pairs = InfotextPairs(last);
  if (pairs.size() < 3) {
    lines.push_back(last);
    pairs.clear();
  }
  bool negative = false;
  for (std::string line : lines) {
    line = std::string(absl::StripAsciiWhitespace(line));
    if (absl::StartsWith(line, "Negative prompt:")) {
      negative = true;
      line = std::string(absl::StripAsciiWhitespace(line.substr(16)));
    }
    std::string& target = negative ? out.negative_prompt : out.prompt;
    target += (target.empty() ? "" : "\n") + line;
  }
  for (auto& [key, value] : pairs) {
    std::string a, b;
    if (SplitSize(value, &a, &b)) {
      out.params.emplace_back(key + "-1", a);
      out.params.emplace_back(key + "-2", b);
    } else {
      out.params.emplace_back(key, value);
    }
  }
  return out;
}

}  // namespace atelier
