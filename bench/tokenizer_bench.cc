// CLIP tokenisation of a ~1,000-token prompt: with WebUI-style tags the BPE cache is warm after the first call
// (BM_Encode1000Tokens); BM_Encode1000TokensUncached makes every word new so each one goes through the BPE merges.
// Baseline in the same process: BM_CopyPrompt, copying the prompt string (the floor of any per-prompt work).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>

#include "engine/text/clip_tokenizer.h"

namespace {

const atelier::engine::ClipTokenizer& Tokenizer() {
  static const auto tokenizer =
      *atelier::engine::ClipTokenizer::Load(std::filesystem::path(ATELIER_SOURCE_DIR) / "assets" / "clip");
  return *tokenizer;
}

std::string Prompt() {
  std::string prompt;
  for (int i = 0; i < 40; ++i) {
    prompt += "masterpiece, best quality, (ultra-detailed:1.2), 1girl, solo, long silver hair, blue eyes, "
              "school uniform, cherry blossoms, ";
  }
  return prompt;
}

void BM_Encode1000Tokens(benchmark::State& state) {
  const std::string prompt = Prompt();
  std::size_t tokens = Tokenizer().Encode(prompt).size();
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer().Encode(prompt));
  state.counters["tokens"] = static_cast<double>(tokens);
}
BENCHMARK(BM_Encode1000Tokens)->Unit(benchmark::kMicrosecond);

void BM_Encode1000TokensUncached(benchmark::State& state) {
  int round = 0;
  std::size_t tokens = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::string prompt;  // ~330 distinct words, never seen before
    for (int i = 0; i < 330; ++i) prompt += "zq" + std::to_string(round * 1000 + i) + "xv, ";
    ++round;
    state.ResumeTiming();
    tokens = Tokenizer().Encode(prompt).size();
  }
  state.counters["tokens"] = static_cast<double>(tokens);
}
BENCHMARK(BM_Encode1000TokensUncached)->Unit(benchmark::kMicrosecond);

void BM_CopyPrompt(benchmark::State& state) {
  const std::string prompt = Prompt();
  for (auto _ : state) {
    std::string copy = prompt;
    benchmark::DoNotOptimize(copy.data());
  }
}
BENCHMARK(BM_CopyPrompt)->Unit(benchmark::kMicrosecond);

}  // namespace
