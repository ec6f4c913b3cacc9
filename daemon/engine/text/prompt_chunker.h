// WebUI's TextConditionalModel.tokenize_line: a prompt (one schedule text) becomes 75-token chunks of 77 ids
// (start token, 75 prompt or padding tokens, end token) with one emphasis multiplier per token, honouring BREAK,
// comma backtracking and textual-inversion embeddings.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/text/embeddings.h"

namespace atelier::engine {

// WebUI's "emphasis" option.
enum class Emphasis {
  kNone,      // "None": brackets are plain text
  kIgnore,    // "Ignore": parsed, but multipliers are not applied
  kOriginal,  // "Original": multiply, then restore the chunk batch's original mean (default)
  kNoNorm,    // "No norm": multiply only
};
absl::StatusOr<Emphasis> ParseEmphasis(absl::string_view name);

struct ChunkingOptions {
  int comma_padding_backtrack = 20;  // WebUI's comma_padding_backtrack (0 disables)
  Emphasis emphasis = Emphasis::kOriginal;
};

// An embedding placed in a chunk: its vectors replace the tokens from `offset` (counted without the start token).
struct ChunkFix {
  int offset = 0;
  const TextualInversion* embedding = nullptr;
};

struct PromptChunk {
  std::vector<int> tokens;           // 77
  std::vector<double> multipliers;   // 77
  std::vector<ChunkFix> fixes;
};

struct TokenizedPrompt {
  std::vector<PromptChunk> chunks;  // at least one
  int token_count = 0;              // what WebUI shows as "N/75"
};

inline constexpr int kChunkLength = 75;

// The all-padding chunk [start, end x 76] (multipliers 1) WebUI uses for empty prompts and batch filling.
PromptChunk EmptyChunk();

// INVALID_ARGUMENT when an emphasis weight is not a number (WebUI raises there, e.g. "(x:1.2.3)").
absl::StatusOr<TokenizedPrompt> TokenizeLine(absl::string_view line, const ChunkingOptions& options,
                                             const ClipTokenizer& tokenizer,
                                             const EmbeddingDatabase* embeddings = nullptr);

}  // namespace atelier::engine
