#include "engine/text/text_cleanup.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace atelier::engine {
namespace {

struct Entity {
  const char* name;
  char32_t code_points[2];  // second is 0 for single-character entities
};
constexpr Entity kEntities[] = {
#include "engine/text/html_entities.inc"
};

// Windows-1252 bytes 0x80..0x9F that are not C1 controls.
constexpr char32_t kCp1252High[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

// The byte a character stands for when UTF-8 was misread as Windows-1252 or Latin-1; -1 if none.
int MisreadByte(char32_t c) {
  if (c >= 0x80 && c <= 0xFF) return static_cast<int>(c);
  for (int i = 0; i < 32; ++i) {
    if (kCp1252High[i] != 0 && kCp1252High[i] == c) return 0x80 + i;
  }
  return -1;
}

icu::UnicodeString ToIcu(const std::u32string& s) {
  return icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()), static_cast<int32_t>(s.size()));
}

std::u32string FromIcu(const icu::UnicodeString& s) {
  std::u32string out(static_cast<std::size_t>(s.countChar32()), U'\0');
  UErrorCode status = U_ZERO_ERROR;
  s.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), status);
  return out;
}

// Python's html.unescape for one numeric reference body ("#39", "#x263A"); 0 when it does not convert.
char32_t NumericReference(const std::u32string& body) {
  const bool hex = body.size() > 1 && (body[1] == 'x' || body[1] == 'X');
  std::uint64_t value = 0;
  std::size_t digits = 0;
  for (std::size_t i = hex ? 2 : 1; i < body.size(); ++i, ++digits) {
    const char32_t c = body[i];
    int d;
    if (c >= '0' && c <= '9') d = static_cast<int>(c - '0');
    else if (hex && c >= 'a' && c <= 'f') d = static_cast<int>(c - 'a' + 10);
    else if (hex && c >= 'A' && c <= 'F') d = static_cast<int>(c - 'A' + 10);
    else return 0;
    value = std::min<std::uint64_t>(value * (hex ? 16 : 10) + static_cast<std::uint64_t>(d), 0x110000);
  }
  if (digits == 0) return 0;
  if (value >= 0x80 && value <= 0x9F && kCp1252High[value - 0x80] != 0) return kCp1252High[value - 0x80];
  if (value == 0 || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0xFFFD;
  return static_cast<char32_t>(value);
}

// ftfy.unescape_html: entities matching &#?[0-9A-Za-z]{1,24}; that name a character.
std::u32string UnescapeHtml(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    std::size_t j = i + 1;
    if (j < s.size() && s[j] == '#') ++j;
    const std::size_t start = j;
    while (j < s.size() && j - start < 25 && s[j] < 0x80 && std::isalnum(static_cast<int>(s[j]))) ++j;
    if (j == start || j - start > 24 || j >= s.size() || s[j] != ';') {
      out.push_back(s[i]);
      continue;
    }
    const std::u32string body = s.substr(i + 1, j - i - 1);
    if (body[0] == '#') {
      if (const char32_t c = NumericReference(body); c != 0) {
        out.push_back(c);
        i = j;
        continue;
      }
    } else {
      std::string name;
      for (char32_t c : body) name.push_back(static_cast<char>(c));
      const auto* found = std::lower_bound(std::begin(kEntities), std::end(kEntities), name,
                                           [](const Entity& e, const std::string& n) { return n.compare(e.name) > 0; });
      if (found != std::end(kEntities) && name == found->name) {
        out.push_back(found->code_points[0]);
        if (found->code_points[1] != 0) out.push_back(found->code_points[1]);
        i = j;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// ESC [ digits/semicolons letter: colour and cursor codes pasted from terminals.
std::u32string RemoveTerminalEscapes(const std::u32string& s) {
  std::u32string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == '[') {
      std::size_t j = i + 2;
      while (j < s.size() && ((s[j] >= '0' && s[j] <= '9') || s[j] == ';')) ++j;
      if (j < s.size() && s[j] < 0x80 && std::isalpha(static_cast<int>(s[j]))) {
        i = j;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// UTF-8 that was decoded as Windows-1252/Latin-1 ("cafÃ©"): re-encode such runs and decode them as UTF-8.
std::u32string FixMojibake(const std::u32string& s) {
  std::u32string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const int lead = MisreadByte(s[i]);
    int length = 0;
    if (lead >= 0xC2 && lead <= 0xDF) length = 2;
    else if (lead >= 0xE0 && lead <= 0xEF) length = 3;
    else if (lead >= 0xF0 && lead <= 0xF4) length = 4;
    if (length > 0 && i + static_cast<std::size_t>(length) <= s.size()) {
      std::string bytes(1, static_cast<char>(lead));
      for (int k = 1; k < length; ++k) {
        const int b = MisreadByte(s[i + static_cast<std::size_t>(k)]);
        if (b < 0x80 || b > 0xBF) break;
        bytes.push_back(static_cast<char>(b));
      }
      if (static_cast<int>(bytes.size()) == length && ValidateUtf8(bytes).ok()) {
        out += DecodeUtf8(bytes);
        i += static_cast<std::size_t>(length) - 1;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

void ReplaceEach(std::u32string& s, char32_t (*f)(char32_t)) {
  for (char32_t& c : s) c = f(c);
}

std::u32string FixLigaturesAndWidth(const std::u32string& s) {
  static const struct {
    char32_t from;
    const char32_t* to;
  } kLigatures[] = {{0x0132, U"IJ"}, {0x0133, U"ij"}, {0x0149, U"\u02BCn"}, {0x01F1, U"DZ"}, {0x01F2, U"Dz"},
                    {0x01F3, U"dz"}, {0x01C4, U"D\u017D"}, {0x01C5, U"D\u017E"}, {0x01C6, U"d\u017E"},
                    {0x01C7, U"LJ"}, {0x01C8, U"Lj"}, {0x01C9, U"lj"}, {0x01CA, U"NJ"}, {0x01CB, U"Nj"},
                    {0x01CC, U"nj"}, {0xFB00, U"ff"}, {0xFB01, U"fi"}, {0xFB02, U"fl"}, {0xFB03, U"ffi"},
                    {0xFB04, U"ffl"}, {0xFB05, U"\u017Ft"}, {0xFB06, U"st"}};
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  std::u32string out;
  out.reserve(s.size());
  for (const char32_t c : s) {
    const auto* lig = std::find_if(std::begin(kLigatures), std::end(kLigatures), [c](const auto& l) { return l.from == c; });
    if (lig != std::end(kLigatures)) {
      out += lig->to;
    } else if (c == 0x3000) {
      out.push_back(U' ');
    } else if (c >= 0xFF01 && c <= 0xFFEF && U_SUCCESS(status)) {  // full-width and half-width forms
      icu::UnicodeString folded;
      UErrorCode fold_status = U_ZERO_ERROR;
      nfkc->normalize(icu::UnicodeString(static_cast<UChar32>(c)), folded, fold_status);
      if (U_SUCCESS(fold_status) && folded.countChar32() == 1) {
        out += FromIcu(folded);
      } else {
        out.push_back(c);
      }
    } else {
      out.push_back(c);
    }
  }
  return out;
}

char32_t UncurlQuote(char32_t c) {
  if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) return U'\'';
  if (c >= 0x201C && c <= 0x201F) return U'"';
  return c;
}

char32_t FixC1Control(char32_t c) {
  if (c >= 0x80 && c <= 0x9F && kCp1252High[c - 0x80] != 0) return kCp1252High[c - 0x80];
  return c;
}

bool IsRemovedControl(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0x1D173 && c <= 0x1D17A) ||
         (c >= 0xE0000 && c <= 0xE007F);
}

std::u32string FixLineBreaksAndControls(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == '\r') {
      out.push_back(U'\n');
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      out.push_back(U'\n');
    } else if (!IsRemovedControl(c)) {
      out.push_back(c);
    }
  }
  return out;
}

std::u32string Nfc(const std::u32string& s) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) return s;
  const icu::UnicodeString input = ToIcu(s);
  if (nfc->isNormalized(input, status) && U_SUCCESS(status)) return s;
  status = U_ZERO_ERROR;
  const icu::UnicodeString normalized = nfc->normalize(input, status);
  return U_SUCCESS(status) ? FromIcu(normalized) : s;
}

}  // namespace

absl::Status ValidateUtf8(absl::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    int length = 0;
    char32_t min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      length = 2, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4, min = 0x10000;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte offset ", i));
    }
    if (text.size() - i < static_cast<std::size_t>(length)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte offset ", i, " (truncated sequence)"));
    }
    char32_t cp = c & (0xFF >> (length + 1));
    for (int k = 1; k < length; ++k) {
      const auto b = static_cast<unsigned char>(text[i + static_cast<std::size_t>(k)]);
      if ((b & 0xC0) != 0x80) return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte offset ", i));
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte offset ", i));
    }
    i += static_cast<std::size_t>(length);
  }
  return absl::OkStatus();
}

std::u32string DecodeUtf8(absl::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    int length = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (length == 0 || !ValidateUtf8(text.substr(i, static_cast<std::size_t>(length))).ok()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = length == 1 ? c : c & (0xFF >> (length + 1));
    for (int k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + static_cast<std::size_t>(k)]) & 0x3F);
    out.push_back(cp);
    i += static_cast<std::size_t>(length);
  }
  return out;
}

bool IsUnicodeSpace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

std::u32string FixText(std::u32string text) {
  // ftfy leaves HTML alone when the text looks like it contains markup.
  const bool unescape = text.find(U'<') == std::u32string::npos;
  for (int pass = 0; pass < 8; ++pass) {  // until nothing changes (ftfy's fix_segment loop)
    const std::u32string before = text;
    if (unescape) text = UnescapeHtml(text);
    text = RemoveTerminalEscapes(text);
    text = FixMojibake(text);
    ReplaceEach(text, FixC1Control);
    text = FixLigaturesAndWidth(text);
    ReplaceEach(text, UncurlQuote);
    text = FixLineBreaksAndControls(text);
    text = Nfc(text);
    if (text == before) break;
  }
  return text;
}

std::u32string CleanForClip(absl::string_view utf8) {
  const std::u32string fixed = FixText(DecodeUtf8(utf8));
  std::u32string collapsed;
  collapsed.reserve(fixed.size());
  bool space = false;
  for (const char32_t c : fixed) {
    if (IsUnicodeSpace(c)) {
      space = true;
      continue;
    }
    if (space && !collapsed.empty()) collapsed.push_back(U' ');
    space = false;
    collapsed.push_back(c);
  }
  icu::UnicodeString lowered = ToIcu(collapsed);
  lowered.toLower(icu::Locale::getRoot());
  return FromIcu(lowered);
}

}  // namespace atelier::engine
