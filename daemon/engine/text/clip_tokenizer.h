// The CLIP byte-level BPE tokenizer of SD 1.x text encoders, with the semantics of Hugging Face's CLIPTokenizer
// (what WebUI uses): special-token strings split first, each remaining piece cleaned (text_cleanup.h), split by
// CLIP's word regex, byte-level BPE with the 48894 ranked merges, ids from the 49408-token vocabulary.
#pragma once

#include <array>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atelier::engine {

class ClipTokenizer {
 public:
  static constexpr int kStartToken = 49406;  // <|startoftext|>
  static constexpr int kEndToken = 49407;    // <|endoftext|>, also SD 1.x's padding token

  // Reads vocab.json and merges.txt (Hugging Face layout) from `dir`.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Load(const std::filesystem::path& dir);

  // Token ids of `text` without start/end tokens (HF CLIPTokenizer(text, add_special_tokens=False).input_ids).
  // `text` must be valid UTF-8 (invalid bytes are read as U+FFFD). Thread-safe.
  std::vector<int> Encode(absl::string_view text) const;

  // The vocabulary string of an id ("cat</w>"); empty for ids outside the vocabulary.
  std::string TokenString(int id) const;
  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }

 private:
  ClipTokenizer() = default;
  void EncodeCleaned(const std::u32string& cleaned, std::vector<int>& out) const;
  void Bpe(const std::string& piece, std::vector<int>& out) const;

  std::unordered_map<std::string, int> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int> merge_ranks_;  // "left right" -> rank
  std::array<std::string, 256> byte_symbols_;         // byte -> its byte-level symbol (UTF-8)

  // Word -> ids, so repeated words cost a lookup. Bounded: cleared when it grows past kMaxCache.
  static constexpr std::size_t kMaxCache = 1 << 16;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int>> cache_;
};

}  // namespace atelier::engine
