// WebUI's "TI hashes" infotext value (sd_hijack_clip.py): the textual-inversion embeddings a job's prompt and
// negative prompt use, "name: <first 12 hex digits of the embedding file's SHA-256>", the prompt's first.
#pragma once

#include <string>

#include "engine/models/model_manager.h"
#include "engine/text/text_conditioning.h"

namespace atelier::jobs {

// Empty when no embedding is used. The file hashes go through the model manager's cache.
std::string TiHashes(const engine::TextConditioner& text, const engine::ConditioningOptions& options,
                     const std::string& prompt, const std::string& negative_prompt, engine::ModelManager& models);

}  // namespace atelier::jobs
