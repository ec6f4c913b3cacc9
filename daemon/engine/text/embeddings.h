// Textual-inversion embeddings from the embeddings/ folder, as WebUI loads them: a prompt word equal to an
// embedding's file name (without extension) is replaced by its vectors. .pt files hold them under
// string_to_param, .safetensors under emb_params, diffusers .bin files as their only tensor.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/io/model_folders.h"

namespace atelier::engine {

struct TextualInversion {
  std::string name;     // the prompt word: file name without extension
  std::string file;     // path below embeddings/
  at::Tensor vectors;   // float32 [vectors, hidden]
  std::vector<int> ids; // the name's token ids (how it is found in a prompt)
};

struct SkippedEmbedding {
  std::string file;
  std::string reason;
};

class EmbeddingDatabase {
 public:
  // Reads every model file in embeddings/ (sub-folders included). Files that are not embeddings, or whose vector
  // width differs from `hidden_size` (e.g. SD2/SDXL embeddings), are skipped with the reason.
  static EmbeddingDatabase Load(const ModelFolders& folders, const ClipTokenizer& tokenizer, int hidden_size);
  // Adds one embedding (tests, and Load).
  absl::Status Add(std::string name, std::string file, at::Tensor vectors, const ClipTokenizer& tokenizer);

  // The embedding whose name's tokens start at tokens[offset], preferring the longest name; nullptr if none.
  // *length receives the number of prompt tokens the name covers.
  const TextualInversion* FindAt(const std::vector<int>& tokens, std::size_t offset, std::size_t* length) const;

  const std::vector<std::shared_ptr<const TextualInversion>>& loaded() const { return loaded_; }
  const std::vector<SkippedEmbedding>& skipped() const { return skipped_; }

 private:
  std::vector<std::shared_ptr<const TextualInversion>> loaded_;
  std::vector<SkippedEmbedding> skipped_;
  // First token id -> embeddings starting with it, longest first (WebUI's ids_lookup).
  std::map<int, std::vector<const TextualInversion*>> by_first_id_;
};

}  // namespace atelier::engine
