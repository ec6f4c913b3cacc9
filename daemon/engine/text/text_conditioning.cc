#include "engine/text/text_conditioning.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/text/prompt_parser.h"
#include "engine/text/text_cleanup.h"

namespace atelier::engine {

absl::StatusOr<TokenizedPrompt> TextConditioner::Tokenize(const std::string& text,
                                                          const ConditioningOptions& options) const {
  if (auto s = ValidateUtf8(text); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("prompt: ", s.message()));
  auto tokenized = TokenizeLine(text, options.chunking, tokenizer_, embeddings_);
  if (!tokenized.ok()) return tokenized.status();
  if (tokenized->token_count > options.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", tokenized->token_count, " tokens; the limit is ",
                                                   options.max_tokens));
  }
  return tokenized;
}

at::Tensor TextConditioner::EncodeChunks(const std::vector<TokenizedPrompt>& prompts, int clip_skip,
                                         Emphasis emphasis) const {
  std::size_t chunk_count = 0;
  for (const auto& p : prompts) chunk_count = std::max(chunk_count, p.chunks.size());
  const PromptChunk empty = EmptyChunk();
  const int64_t batch = static_cast<int64_t>(prompts.size());
  std::vector<at::Tensor> parts;
  for (std::size_t i = 0; i < chunk_count; ++i) {
    at::Tensor tokens = at::empty({batch, kChunkLength + 2}, at::kLong);
    std::vector<float> multipliers;  // WebUI turns the Python doubles into a float32 tensor
    std::vector<std::vector<EmbeddingFix>> fixes(prompts.size());
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      const PromptChunk& chunk = i < prompts[b].chunks.size() ? prompts[b].chunks[i] : empty;
      std::copy(chunk.tokens.begin(), chunk.tokens.end(), tokens[static_cast<int64_t>(b)].data_ptr<int64_t>());
      for (double m : chunk.multipliers) multipliers.push_back(static_cast<float>(m));
      for (const ChunkFix& fix : chunk.fixes) fixes[b].push_back({fix.offset, fix.embedding->vectors});
    }
    at::Tensor z = model_.Encode(tokens, clip_skip, fixes);  // [batch, 77, hidden]
    if (emphasis == Emphasis::kOriginal || emphasis == Emphasis::kNoNorm) {
      const at::Tensor m = at::from_blob(multipliers.data(), {batch, kChunkLength + 2}, at::kFloat)
                               .to(z.options())
                               .unsqueeze(-1);
      if (emphasis == Emphasis::kOriginal) {
        // The mean over the whole chunk batch is restored after weighting (sd_emphasis.EmphasisOriginal).
        const at::Tensor original_mean = z.mean();
        z = z * m.expand(z.sizes());
        const at::Tensor new_mean = z.mean();
        z = z * (original_mean / new_mean);
      } else {
        z = z * m.expand(z.sizes());
      }
    }
    parts.push_back(z);
  }
  return at::cat(parts, 1);
}

absl::StatusOr<at::Tensor> TextConditioner::Encode(const std::vector<std::string>& texts,
                                                   const ConditioningOptions& options) const {
  std::vector<TokenizedPrompt> prompts;
  prompts.reserve(texts.size());
  for (const std::string& text : texts) {
    auto tokenized = Tokenize(text, options);
    if (!tokenized.ok()) return tokenized.status();
    prompts.push_back(*std::move(tokenized));
  }
  return EncodeChunks(prompts, options.clip_skip, options.chunking.emphasis);
}

absl::StatusOr<std::vector<std::vector<ScheduledConditioning>>> GetLearnedConditioning(
    const TextConditioner& conditioner, const std::vector<std::string>& prompts, int steps,
    const ConditioningOptions& options, std::optional<int> hires_steps) {
  std::map<std::string, std::vector<ScheduledConditioning>> cache;  // each distinct prompt once
  std::vector<std::vector<ScheduledConditioning>> out;
  for (const std::string& prompt : prompts) {
    auto cached = cache.find(prompt);
    if (cached == cache.end()) {
      const std::vector<ScheduleEntry> schedule = GetPromptSchedules(prompt, steps, hires_steps);
      std::vector<std::string> texts;
      for (const ScheduleEntry& entry : schedule) texts.push_back(entry.text);
      auto conds = conditioner.Encode(texts, options);  // one batch: emphasis means span the schedule's texts
      if (!conds.ok()) return conds.status();
      std::vector<ScheduledConditioning> scheduled;
      for (std::size_t i = 0; i < schedule.size(); ++i) {
        scheduled.push_back({schedule[i].end_at_step, (*conds)[static_cast<int64_t>(i)]});
      }
      cached = cache.emplace(prompt, std::move(scheduled)).first;
    }
    out.push_back(cached->second);
  }
  return out;
}

absl::StatusOr<MulticondConditioning> GetMulticondLearnedConditioning(const TextConditioner& conditioner,
                                                                      const std::vector<std::string>& prompts,
                                                                      int steps, const ConditioningOptions& options,
                                                                      std::optional<int> hires_steps) {
  MulticondConditioning result;
  const MulticondBatch split = GetMulticondPromptLists(prompts);
  for (const auto& parts : split.indexes) {
    std::vector<ComposableConditioning> composed;
    for (const auto& [index, weight] : parts) composed.push_back({index, weight});
    result.batch.push_back(std::move(composed));
  }
  auto learned = GetLearnedConditioning(conditioner, split.flat_list, steps, options, hires_steps);
  if (!learned.ok()) return learned.status();
  result.schedules = *std::move(learned);
  return result;
}

const at::Tensor& CondAtStep(const std::vector<ScheduledConditioning>& schedule, int step) {
  for (const ScheduledConditioning& entry : schedule) {
    if (step <= entry.end_at_step) return entry.cond;
  }
  return schedule.back().cond;
}

}  // namespace atelier::engine
