// UTF-8 encoding, the daemon's one encoder: code points to UTF-8, and Latin-1 <-> UTF-8 for formats that store
// Latin-1 text (PNG tEXt chunks, Python 2 pickles, protocol-2 bytes).
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace atelier {

// Appends code point `cp` (at most U+10FFFF) as UTF-8.
void AppendUtf8(std::uint32_t cp, std::string& out);
std::string EncodeUtf8(const std::u32string& text);

// `text` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD (for text from
// plugins and files that goes into protobuf strings, which must be valid UTF-8).
std::string ValidUtf8(absl::string_view text);

std::string Latin1ToUtf8(absl::string_view latin1);
// False (and `out` unspecified) when the UTF-8 holds a code point above U+00FF or is malformed.
bool Utf8ToLatin1(absl::string_view utf8, std::string& out);

}  // namespace atelier
