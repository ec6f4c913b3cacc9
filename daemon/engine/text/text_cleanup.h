// Text clean-up before CLIP tokenisation, as Hugging Face's CLIPTokenizer does it with ftfy installed (the
// tokenizer WebUI uses): ftfy.fix_text, then every run of whitespace collapsed to one space, then full Unicode
// lower-casing. The ftfy part is the subset of ftfy 6 fixes that change prompts: HTML entities (skipped when the
// text holds a literal '<'), terminal escape codes, UTF-8 mojibake read as Windows-1252/Latin-1, Latin ligatures,
// full-width forms, curly quotes, line breaks, control characters, NFC; applied until the text stops changing.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "util/utf8.h"  // EncodeUtf8

namespace atelier::engine {

// INVALID_ARGUMENT naming the byte offset of the first invalid UTF-8 sequence.
absl::Status ValidateUtf8(absl::string_view text);

std::u32string DecodeUtf8(absl::string_view text);  // invalid sequences become U+FFFD

// ftfy.fix_text (HF CLIPTokenizer configuration).
std::u32string FixText(std::u32string text);

// FixText, whitespace collapse and strip, lower-casing: the text the CLIP regex and BPE see.
std::u32string CleanForClip(absl::string_view utf8);

// Python's str.isspace / regex \s on one code point (Unicode White_Space).
bool IsUnicodeSpace(char32_t c);

}  // namespace atelier::engine
