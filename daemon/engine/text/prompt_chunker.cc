#include "engine/text/prompt_chunker.h"

#include "absl/strings/str_cat.h"
#include "engine/text/prompt_parser.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace {

constexpr int kCommaToken = 267;  // ",</w>"; ")," or ",," are other tokens and do not count

}  // namespace

absl::StatusOr<Emphasis> ParseEmphasis(absl::string_view name) {
  if (name == "None") return Emphasis::kNone;
  if (name == "Ignore") return Emphasis::kIgnore;
  if (name == "Original") return Emphasis::kOriginal;
  if (name == "No norm") return Emphasis::kNoNorm;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown emphasis ", Quoted(name), "; valid: None, Ignore, Original, No norm"));
}

PromptChunk EmptyChunk() {
  PromptChunk chunk;
  chunk.tokens.assign(kChunkLength + 2, ClipTokenizer::kEndToken);
  chunk.tokens[0] = ClipTokenizer::kStartToken;
  chunk.multipliers.assign(kChunkLength + 2, 1.0);
  return chunk;
}

absl::StatusOr<TokenizedPrompt> TokenizeLine(absl::string_view line, const ChunkingOptions& options,
                                             const ClipTokenizer& tokenizer, const EmbeddingDatabase* embeddings) {
  std::vector<AttentionRun> parsed;
  if (options.emphasis == Emphasis::kNone) {
    parsed.push_back({std::string(line), 1.0});
  } else {
    auto runs = ParsePromptAttention(line);
    if (!runs.ok()) return runs.status();
    parsed = *std::move(runs);
  }

  TokenizedPrompt out;
  PromptChunk chunk;
  int last_comma = -1;
  // Pads to 75, wraps in start/end tokens, and starts a new chunk.
  auto next_chunk = [&](bool is_last) {
    out.token_count += is_last ? static_cast<int>(chunk.tokens.size()) : kChunkLength;
    const int to_add = kChunkLength - static_cast<int>(chunk.tokens.size());
    if (to_add > 0) {
      chunk.tokens.insert(chunk.tokens.end(), static_cast<std::size_t>(to_add), ClipTokenizer::kEndToken);
      chunk.multipliers.insert(chunk.multipliers.end(), static_cast<std::size_t>(to_add), 1.0);
    }
    chunk.tokens.insert(chunk.tokens.begin(), ClipTokenizer::kStartToken);
    chunk.tokens.push_back(ClipTokenizer::kEndToken);
    chunk.multipliers.insert(chunk.multipliers.begin(), 1.0);
    chunk.multipliers.push_back(1.0);
    last_comma = -1;
    out.chunks.push_back(std::move(chunk));
    chunk = PromptChunk();
  };

  for (const AttentionRun& run : parsed) {
    if (run.text == "BREAK" && run.weight == -1) {
      next_chunk(false);
      continue;
    }
    const std::vector<int> tokens = tokenizer.Encode(run.text);
    std::size_t position = 0;
    while (position < tokens.size()) {
      const int token = tokens[position];
      const int length = static_cast<int>(chunk.tokens.size());
      if (token == kCommaToken) {
        last_comma = length;
      } else if (options.comma_padding_backtrack != 0 && length == kChunkLength && last_comma != -1 &&
                 length - last_comma <= options.comma_padding_backtrack) {
        // Move the words after the last comma to the next chunk rather than cut them in two. (As in WebUI, the
        // fixes stay with the old chunk.)
        const std::size_t break_at = static_cast<std::size_t>(last_comma) + 1;
        std::vector<int> moved_tokens(chunk.tokens.begin() + static_cast<std::ptrdiff_t>(break_at), chunk.tokens.end());
        std::vector<double> moved_multipliers(chunk.multipliers.begin() + static_cast<std::ptrdiff_t>(break_at),
                                              chunk.multipliers.end());
        chunk.tokens.resize(break_at);
        chunk.multipliers.resize(break_at);
        next_chunk(false);
        chunk.tokens = std::move(moved_tokens);
        chunk.multipliers = std::move(moved_multipliers);
      }
      if (static_cast<int>(chunk.tokens.size()) == kChunkLength) next_chunk(false);

      std::size_t matched = 0;
      const TextualInversion* embedding =
          embeddings != nullptr ? embeddings->FindAt(tokens, position, &matched) : nullptr;
      if (embedding == nullptr) {
        chunk.tokens.push_back(token);
        chunk.multipliers.push_back(run.weight);
        ++position;
        continue;
      }
      const int vectors = static_cast<int>(embedding->vectors.size(0));
      if (static_cast<int>(chunk.tokens.size()) + vectors > kChunkLength) next_chunk(false);
      chunk.fixes.push_back({static_cast<int>(chunk.tokens.size()), embedding});
      chunk.tokens.insert(chunk.tokens.end(), static_cast<std::size_t>(vectors), 0);
      chunk.multipliers.insert(chunk.multipliers.end(), static_cast<std::size_t>(vectors), run.weight);
      position += matched;
    }
  }
  if (!chunk.tokens.empty() || out.chunks.empty()) next_chunk(true);
  return out;
}

}  // namespace atelier::engine
