#include "engine/infotext_parse.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/sampler_table.h"
#include "engine/schedulers.h"

namespace atelier::engine {
namespace {

// Python's \w for str patterns: letters, digits, underscore, and any non-ASCII character (UTF-8 bytes).
bool IsWord(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || absl::ascii_isalnum(u) || c == '_';
}
bool IsKeyChar(char c) { return IsWord(c) || c == ' ' || c == '-' || c == '/'; }
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// One attempt of re_param = \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$) at `pos`; the match end, or npos.
size_t MatchParam(absl::string_view s, size_t pos, std::string* key, std::string* value) {
  size_t i = pos;
  while (i < s.size() && IsSpace(s[i])) ++i;
  if (i >= s.size() || !IsWord(s[i])) return absl::string_view::npos;
  const size_t key_start = i++;
  while (i < s.size() && IsKeyChar(s[i])) ++i;
  // The key run cannot contain ':', so backtracking into it never finds one: the run must be followed by ':'.
  if (i - key_start < 2 || i >= s.size() || s[i] != ':') return absl::string_view::npos;
  *key = std::string(s.substr(key_start, i - key_start));
  ++i;
  while (i < s.size() && IsSpace(s[i])) ++i;
  // Quoted alternative first: "(?:\\.|[^\\"])+" followed by ',' or the end.
  if (i < s.size() && s[i] == '"') {
    size_t j = i + 1;
    bool ok = false;
    while (j < s.size()) {
      if (s[j] == '\\' && j + 1 < s.size()) {
        j += 2;
      } else if (s[j] == '"') {
        ok = j > i + 1;
        break;
      } else if (s[j] == '\\') {
        break;
      } else {
        ++j;
      }
    }
    if (ok && (j + 1 == s.size() || s[j + 1] == ',')) {
      *value = std::string(s.substr(i, j + 1 - i));
      return j + 1 == s.size() ? j + 1 : j + 2;
    }
  }
  // [^,]* then ',' or the end.
  const size_t comma = s.find(',', i);
  const size_t end = comma == absl::string_view::npos ? s.size() : comma;
  *value = std::string(s.substr(i, end - i));
  return comma == absl::string_view::npos ? end : comma + 1;
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

std::vector<std::pair<std::string, std::string>> InfotextPairs(absl::string_view line) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < line.size()) {
    std::string key, value;
    const size_t end = MatchParam(line, pos, &key, &value);
    if (end == absl::string_view::npos) {
      ++pos;  // findall moves on one character and tries again
      continue;
    }
    out.emplace_back(std::move(key), Unquote(value));
    pos = end;  // a match always consumes a key of two or more characters
  }
  return out;
}

ParsedInfotext ParseInfotext(absl::string_view text) {
  ParsedInfotext out;
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
      out.params[key + "-1"] = a;
      out.params[key + "-2"] = b;
      out.written.insert(key + "-1");
      out.written.insert(key + "-2");
    } else {
      out.params[key] = value;
      out.written.insert(key);
    }
  }
  // WebUI's defaults for keys an infotext leaves out.
  const std::pair<const char*, const char*> defaults[] = {
      {"Clip skip", "1"},
      {"Hires resize-1", "0"},
      {"Hires resize-2", "0"},
      {"Hires sampler", "Use same sampler"},
      {"Hires schedule type", "Use same scheduler"},
      {"Hires checkpoint", "Use same checkpoint"},
      {"Hires prompt", ""},
      {"Hires negative prompt", ""},
      {"Mask mode", "Inpaint masked"},
      {"Masked content", "original"},
      {"Inpaint area", "Whole picture"},
      {"Masked area padding", "32"},
      {"RNG", "GPU"},
      {"Schedule type", "Automatic"},
      {"Schedule max sigma", "0"},
      {"Schedule min sigma", "0"},
      {"Schedule rho", "0"},
      {"VAE Encoder", "Full"},
      {"VAE Decoder", "Full"},
      {"FP8 weight", "Disable"},
      {"Refiner switch by sampling steps", "False"},
  };
  for (const auto& [key, value] : defaults) out.params.emplace(key, value);
  // Legacy combined sampler names ("DPM++ 2M Karras") are split the way WebUI splits them.
  if (const std::string* sampler = out.Find("Sampler")) {
    auto choice = ResolveSampler(*sampler, out.params["Schedule type"]);
    if (choice.ok() && *sampler != choice->sampler->name) {  // a legacy name or an alias: take WebUI's split
      out.params["Sampler"] = choice->sampler->name;
      out.params["Schedule type"] = SchedulerLabel(choice->scheduler);
    }
  }
  return out;
}

}  // namespace atelier::engine
