#include "engine/text/clip_tokenizer.h"

#include <unicode/uchar.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/text/text_cleanup.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

constexpr char kStartText[] = "<|startoftext|>";
constexpr char kEndText[] = "<|endoftext|>";

bool IsLetter(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0; }
bool IsNumber(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0; }

bool MatchesAt(const std::u32string& s, std::size_t at, const char* ascii) {
  std::size_t i = 0;
  for (; ascii[i] != '\0'; ++i) {
    if (at + i >= s.size() || s[at + i] != static_cast<char32_t>(ascii[i])) return false;
  }
  return true;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100 upwards.
std::array<std::string, 256> ByteSymbols() {
  std::array<std::string, 256> symbols;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    symbols[static_cast<std::size_t>(b)] = EncodeUtf8(std::u32string(1, printable ? static_cast<char32_t>(b) : next++));
  }
  return symbols;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Load(const fs::path& dir) {
  std::unique_ptr<ClipTokenizer> t(new ClipTokenizer());
  std::ifstream vocab_in(dir / "vocab.json");
  if (!vocab_in) return absl::NotFoundError(absl::StrCat("CLIP vocabulary not found: ", (dir / "vocab.json").string()));
  const auto vocab = nlohmann::json::parse(vocab_in, nullptr, false);
  if (vocab.is_discarded() || !vocab.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat((dir / "vocab.json").string(), " is not a JSON object"));
  }
  t->id_to_token_.resize(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int>() < 0 || id.get<std::size_t>() >= vocab.size()) {
      return absl::InvalidArgumentError(absl::StrCat("vocab.json: bad id for token '", token, "'"));
    }
    t->vocab_[token] = id.get<int>();
    t->id_to_token_[id.get<std::size_t>()] = token;
  }
  if (t->vocab_.size() <= static_cast<std::size_t>(kEndToken) || t->id_to_token_[kStartToken] != kStartText ||
      t->id_to_token_[kEndToken] != kEndText) {
    return absl::InvalidArgumentError("vocab.json is not the CLIP vocabulary (49408 tokens with <|startoftext|> = 49406)");
  }
  std::ifstream merges_in(dir / "merges.txt");
  if (!merges_in) return absl::NotFoundError(absl::StrCat("CLIP merges not found: ", (dir / "merges.txt").string()));
  std::string line;
  std::getline(merges_in, line);  // "#version: 0.2"
  int rank = 0;
  while (std::getline(merges_in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line.find(' ') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("merges.txt line ", rank + 2, " is not 'left right'"));
    }
    t->merge_ranks_.emplace(line, rank++);
  }
  t->byte_symbols_ = ByteSymbols();
  return t;
}

std::string ClipTokenizer::TokenString(int id) const {
  return id >= 0 && id < vocab_size() ? id_to_token_[static_cast<std::size_t>(id)] : std::string();
}

void ClipTokenizer::Bpe(const std::string& piece, std::vector<int>& out) const {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (const auto it = cache_.find(piece); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Symbols: one byte-level symbol per byte, "</w>" on the last.
  std::vector<std::string> word;
  word.reserve(piece.size());
  for (const char ch : piece) word.push_back(byte_symbols_[static_cast<unsigned char>(ch)]);
  if (!word.empty()) word.back() += "</w>";
  // Merge the lowest-ranked adjacent pair (every occurrence, left to right) until none is ranked.
  while (word.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::size_t best_at = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merge_ranks_.find(word[i] + " " + word[i + 1]);
      if (it != merge_ranks_.end() && it->second < best) {
        best = it->second;
        best_at = i;
      }
    }
    if (best == std::numeric_limits<int>::max()) break;
    const std::string first = word[best_at], second = word[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word = std::move(merged);
  }
  std::vector<int> ids;
  ids.reserve(word.size());
  for (const auto& symbol : word) {
    const auto it = vocab_.find(symbol);
    ids.push_back(it == vocab_.end() ? kEndToken : it->second);  // HF's unk token is <|endoftext|>
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() >= kMaxCache) cache_.clear();
  cache_.emplace(piece, std::move(ids));
}

// CLIP's word regex, leftmost alternative first at each position:
//   <|startoftext|> | <|endoftext|> | 's|'t|'re|'ve|'m|'ll|'d | \p{L}+ | \p{N} | [^\s\p{L}\p{N}]+
void ClipTokenizer::EncodeCleaned(const std::u32string& s, std::vector<int>& out) const {
  std::size_t i = 0;
  while (i < s.size()) {
    const char32_t c = s[i];
    if (IsUnicodeSpace(c)) {
      ++i;
      continue;
    }
    if (MatchesAt(s, i, kStartText)) {
      out.push_back(kStartToken);
      i += sizeof(kStartText) - 1;
      continue;
    }
    if (MatchesAt(s, i, kEndText)) {
      out.push_back(kEndToken);
      i += sizeof(kEndText) - 1;
      continue;
    }
    std::size_t end = i + 1;
    if (c == '\'') {
      for (const char* suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
        if (MatchesAt(s, i + 1, suffix)) {
          end = i + 1 + std::strlen(suffix);
          break;
        }
      }
      if (end == i + 1) {  // a lone apostrophe: part of a punctuation run
        while (end < s.size() && !IsUnicodeSpace(s[end]) && !IsLetter(s[end]) && !IsNumber(s[end])) ++end;
      }
    } else if (IsLetter(c)) {
      while (end < s.size() && IsLetter(s[end])) ++end;
    } else if (!IsNumber(c)) {
      while (end < s.size() && !IsUnicodeSpace(s[end]) && !IsLetter(s[end]) && !IsNumber(s[end])) ++end;
    }
    Bpe(EncodeUtf8(s.substr(i, end - i)), out);
    i = end;
  }
}

std::vector<int> ClipTokenizer::Encode(absl::string_view text) const {
  std::vector<int> ids;
  // Special-token strings in the raw text are split off first (case-sensitive); the rest is cleaned per piece.
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t next = text.size();
    int special = 0;
    std::size_t special_length = 0;
    for (const auto& [marker, id] : {std::pair<absl::string_view, int>{kStartText, kStartToken},
                                     std::pair<absl::string_view, int>{kEndText, kEndToken}}) {
      const std::size_t at = text.find(marker, start);
      if (at != absl::string_view::npos && at < next) {
        next = at;
        special = id;
        special_length = marker.size();
      }
    }
    if (next > start) EncodeCleaned(CleanForClip(text.substr(start, next - start)), ids);
    if (special == 0) break;
    ids.push_back(special);
    start = next + special_length;
  }
  return ids;
}

}  // namespace atelier::engine
