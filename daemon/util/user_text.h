// Quoting what a user sent inside an error message: named, never echoed whole. A long value is cut to its first
// characters (on a character boundary) with its size, so a 1 MB sampler name gives a short INVALID_ARGUMENT instead
// of a 1 MB message (or a client failing on metadata size); invalid UTF-8 is replaced, so the message is valid text.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace atelier {

inline constexpr std::size_t kQuotedChars = 64;

// "'value'" for a short value; "'first 64 characters…' (123456 bytes)" for a long one. `open` / `close` are the
// quotes ("'" or "\"").
std::string Quoted(absl::string_view value, absl::string_view open = "'", absl::string_view close = "'");

}  // namespace atelier
