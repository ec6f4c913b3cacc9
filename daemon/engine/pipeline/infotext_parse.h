// Reading WebUI infotext back (infotext_utils.parse_generation_parameters): the prompt lines, the "Negative prompt:"
// lines, and the last line's "Key: value" pairs by WebUI's regex, JSON-unquoted, "WxH" values split into Key-1 /
// Key-2, and WebUI's defaults for keys older infotexts lack. Legacy combined sampler names are split as WebUI does.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "util/infotext_text.h"

namespace atelier::engine {

struct ParsedInfotext {
  std::string prompt, negative_prompt;
  // Every parsed and defaulted key ("Steps", "Size-1", "Size-2", "Clip skip", ...); values are text, as in WebUI.
  std::map<std::string, std::string> params;
  // The keys the text itself has (before defaults were added).
  std::set<std::string> written;

  const std::string* Find(const std::string& key) const {
    const auto it = params.find(key);
    return it == params.end() ? nullptr : &it->second;
  }
};

// The "Key: value" pairs of one line as WebUI's re_param.findall sees them (util/infotext_text.h).
using ::atelier::InfotextPairs;

// parse_generation_parameters. Never fails: text without a parameter line is all prompt.
ParsedInfotext ParseInfotext(absl::string_view text);

}  // namespace atelier::engine
