#include "util/user_text.h"

#include "absl/strings/str_cat.h"
#include "util/utf8.h"

namespace atelier {

std::string Quoted(absl::string_view value, absl::string_view open, absl::string_view close) {
  // Count characters (UTF-8 lead bytes) up to the limit; cut before the first character past it.
  std::size_t chars = 0, cut = value.size();
  for (std::size_t i = 0; i < value.size(); ++i) {
    if ((static_cast<unsigned char>(value[i]) & 0xC0) == 0x80) continue;  // a continuation byte
    if (chars == kQuotedChars) {
      cut = i;
      break;
    }
    ++chars;
  }
  if (cut == value.size()) return absl::StrCat(open, ValidUtf8(value), close);
  return absl::StrCat(open, ValidUtf8(value.substr(0, cut)), "\u2026", close, " (", value.size(), " bytes)");
}

}  // namespace atelier
