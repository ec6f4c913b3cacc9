#include "jobs/job_ti_hashes.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/text/prompt_parser.h"

namespace atelier::jobs {
namespace {

// The embeddings one text uses, once each, in the order they appear. Schedules and alternatives are tokenized
// unexpanded: every embedding any of their steps uses appears in the text.
std::vector<const engine::TextualInversion*> Used(const engine::TextConditioner& text,
                                                  const engine::ConditioningOptions& options, const std::string& prompt) {
  std::vector<const engine::TextualInversion*> used;
  auto tokenized = text.Tokenize(engine::StripExtraNetworkTags(prompt), options);
  if (!tokenized.ok()) return used;  // the job itself reports a bad prompt
  for (const auto& chunk : tokenized->chunks) {
    for (const auto& fix : chunk.fixes) {
      if (std::find(used.begin(), used.end(), fix.embedding) == used.end()) used.push_back(fix.embedding);
    }
  }
  return used;
}

}  // namespace

std::string TiHashes(const engine::TextConditioner& text, const engine::ConditioningOptions& options,
                     const std::string& prompt, const std::string& negative_prompt, engine::ModelManager& models) {
  if (models.folders() == nullptr) return "";
  std::vector<std::string> entries;
  for (const std::string* p : {&prompt, &negative_prompt}) {
    for (const engine::TextualInversion* e : Used(text, options, *p)) {
      auto path = models.folders()->Resolve(engine::ModelFolder::kEmbedding, e->file);
      if (!path.ok()) continue;
      auto hash = models.FileSha256(*path);
      if (!hash.ok() || hash->empty()) continue;
      std::string name = e->name;
      name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return c == ':' || c == ','; }), name.end());
      entries.push_back(absl::StrCat(name, ": ", hash->substr(0, 12)));
    }
  }
  return absl::StrJoin(entries, ", ");
}

}  // namespace atelier::jobs
