// WebUI infotext as text (infotext_utils.parse_generation_parameters without its defaults): the prompt lines, the
// "Negative prompt:" lines and the last line's "Key: value" pairs by WebUI's regex, JSON-unquoted, "WxH" values
// split into Key-1 / Key-2. No libtorch: clients (the HTTP gateway) read infotexts with it too; the engine adds
// WebUI's defaults and the legacy sampler split (engine/pipeline/infotext_parse.h).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace atelier {

// The "Key: value" pairs of one line as WebUI's re_param.findall sees them (values unquoted when JSON-quoted).
std::vector<std::pair<std::string, std::string>> InfotextPairs(absl::string_view line);

struct InfotextText {
  std::string prompt, negative_prompt;
  std::vector<std::pair<std::string, std::string>> params;  // in the text's order; sizes split
};

// Never fails: text without a parameter line (fewer than three pairs) is all prompt.
InfotextText SplitInfotextText(absl::string_view text);

}  // namespace atelier
