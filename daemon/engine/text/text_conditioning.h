// Prompt conditioning as WebUI computes it (FrozenCLIPEmbedderWithCustomWords.forward): every prompt of a batch
// is chunked, chunk i of all prompts is encoded as one batch, emphasis is applied per chunk batch, and the chunks
// are concatenated along the token axis. Prompt-editing schedules and AND are resolved as in prompt_parser.py.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/clip_text_model.h"
#include "engine/text/prompt_chunker.h"

namespace atelier::engine {

struct ConditioningOptions {
  int clip_skip = 1;                // WebUI's CLIP_stop_at_last_layers
  ChunkingOptions chunking;
  int max_tokens = 20000;           // prompts longer than this (in tokens) are refused
};

// The text encoder with its tokenizer and embeddings, ready to condition prompts.
class TextConditioner {
 public:
  // All three must outlive the conditioner; `embeddings` may be null.
  TextConditioner(const ClipTokenizer& tokenizer, const ClipTextModel& model, const EmbeddingDatabase* embeddings)
      : tokenizer_(tokenizer), model_(model), embeddings_(embeddings) {}

  // [texts.size(), 77 * chunks, hidden]. Prompts with fewer chunks get all-padding chunks. INVALID_ARGUMENT for
  // invalid UTF-8 (naming the byte offset), an unparsable emphasis weight, or more than max_tokens tokens.
  absl::StatusOr<at::Tensor> Encode(const std::vector<std::string>& texts, const ConditioningOptions& options) const;

  // The chunks one prompt gives (for token counts and tests).
  absl::StatusOr<TokenizedPrompt> Tokenize(const std::string& text, const ConditioningOptions& options) const;

  // Encodes already chunked prompts (chunk i of each prompt in one batch).
  at::Tensor EncodeChunks(const std::vector<TokenizedPrompt>& prompts, int clip_skip, Emphasis emphasis) const;

 private:
  const ClipTokenizer& tokenizer_;
  const ClipTextModel& model_;
  const EmbeddingDatabase* embeddings_;
};

// One conditioning of a prompt-editing schedule: used for denoiser calls up to and including `end_at_step`.
struct ScheduledConditioning {
  int end_at_step = 0;
  at::Tensor cond;  // [77 * chunks, hidden]
};

// WebUI's get_learned_conditioning: the schedule of each prompt, each distinct prompt computed once, the texts of
// one prompt's schedule encoded together in one batch.
absl::StatusOr<std::vector<std::vector<ScheduledConditioning>>> GetLearnedConditioning(
    const TextConditioner& conditioner, const std::vector<std::string>& prompts, int steps,
    const ConditioningOptions& options, std::optional<int> hires_steps = std::nullopt);

// WebUI's get_multicond_learned_conditioning: each prompt split on AND into weighted parts; the distinct part
// texts of the whole batch conditioned once (a flat list) and referenced by index.
struct ComposableConditioning {
  int schedule = 0;  // index into MulticondConditioning::schedules
  double weight = 1.0;
};
struct MulticondConditioning {
  std::vector<std::vector<ComposableConditioning>> batch;  // per prompt
  std::vector<std::vector<ScheduledConditioning>> schedules;
};
absl::StatusOr<MulticondConditioning> GetMulticondLearnedConditioning(const TextConditioner& conditioner,
                                                                      const std::vector<std::string>& prompts,
                                                                      int steps, const ConditioningOptions& options,
                                                                      std::optional<int> hires_steps = std::nullopt);

// The conditioning of a schedule at denoiser call `step` (0-based): the first entry with step <= end_at_step.
const at::Tensor& CondAtStep(const std::vector<ScheduledConditioning>& schedule, int step);

}  // namespace atelier::engine
