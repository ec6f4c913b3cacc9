#include "engine/text/embeddings.h"

#include <ATen/Functions.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/io/tensor_file.h"
#include "util/log.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

// The vectors of an embedding file, as WebUI's create_embedding_from_data finds them.
absl::StatusOr<at::Tensor> VectorsOf(const TensorSet& set) {
  std::vector<const at::Tensor*> string_to_param;
  for (const auto& [name, t] : set.tensors) {
    if (absl::StartsWith(name, "string_to_param.")) string_to_param.push_back(&t);
  }
  if (string_to_param.size() > 1) return absl::InvalidArgumentError("more than one tensor under string_to_param");
  if (string_to_param.size() == 1) return *string_to_param[0];
  for (const auto& [name, t] : set.tensors) {
    if (name == "emb_params") return t;
  }
  if (set.tensors.size() == 1) return set.tensors[0].second;  // diffusers: {token: tensor}
  return absl::InvalidArgumentError("no string_to_param or emb_params tensor: not a textual-inversion embedding");
}

}  // namespace

absl::Status EmbeddingDatabase::Add(std::string name, std::string file, at::Tensor vectors,
                                    const ClipTokenizer& tokenizer) {
  if (vectors.dim() == 1) vectors = vectors.unsqueeze(0);
  if (vectors.dim() != 2 || vectors.size(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("embedding '", name, "' must hold [vectors, width] values"));
  }
  auto embedding = std::make_shared<TextualInversion>();
  embedding->ids = tokenizer.Encode(name);
  if (embedding->ids.empty()) return absl::InvalidArgumentError(absl::StrCat("embedding name '", name, "' has no tokens"));
  embedding->name = std::move(name);
  embedding->file = std::move(file);
  embedding->vectors = vectors.to(at::kFloat).contiguous();
  auto& candidates = by_first_id_[embedding->ids[0]];
  // A file with the same name replaces the earlier one, as later files overwrite in WebUI's dictionary.
  candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                  [&](const TextualInversion* e) { return e->name == embedding->name; }),
                   candidates.end());
  loaded_.erase(std::remove_if(loaded_.begin(), loaded_.end(), [&](const auto& e) { return e->name == embedding->name; }),
                loaded_.end());
  candidates.push_back(embedding.get());
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const TextualInversion* a, const TextualInversion* b) { return a->ids.size() > b->ids.size(); });
  loaded_.push_back(std::move(embedding));
  return absl::OkStatus();
}

EmbeddingDatabase EmbeddingDatabase::Load(const ModelFolders& folders, const ClipTokenizer& tokenizer,
                                          int hidden_size) {
  EmbeddingDatabase db;
  const fs::path dir = folders.FolderPath(ModelFolder::kEmbedding);
  for (const ModelFileEntry& entry : folders.List(ModelFolder::kEmbedding)) {
    auto skip = [&](std::string reason) {
      LogDebug(absl::StrCat("embedding ", entry.filename, " skipped: ", reason));
      db.skipped_.push_back({entry.filename, std::move(reason)});
    };
    auto set = ReadTensorSet(dir / entry.filename);
    if (!set.ok()) {
      skip(std::string(set.status().message()));
      continue;
    }
    auto vectors = VectorsOf(*set);
    if (!vectors.ok()) {
      skip(std::string(vectors.status().message()));
      continue;
    }
    if (vectors->size(-1) != hidden_size) {
      skip(absl::StrCat("vectors of width ", vectors->size(-1), ", the text encoder needs ", hidden_size));
      continue;
    }
    const std::string name = fs::path(entry.filename).stem().string();
    if (auto s = db.Add(name, entry.filename, *vectors, tokenizer); !s.ok()) skip(std::string(s.message()));
  }
  return db;
}

const TextualInversion* EmbeddingDatabase::FindAt(const std::vector<int>& tokens, std::size_t offset,
                                                  std::size_t* length) const {
  if (offset >= tokens.size()) return nullptr;
  const auto it = by_first_id_.find(tokens[offset]);
  if (it == by_first_id_.end()) return nullptr;
  for (const TextualInversion* e : it->second) {
    if (tokens.size() - offset >= e->ids.size() &&
        std::equal(e->ids.begin(), e->ids.end(), tokens.begin() + static_cast<std::ptrdiff_t>(offset))) {
      *length = e->ids.size();
      return e;
    }
  }
  return nullptr;
}

}  // namespace atelier::engine
