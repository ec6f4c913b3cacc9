#include "jobs/pipeline_cache.h"

#include <utility>

namespace atelier::jobs {

PipelineCache::PipelineCache(engine::ModelManager& models, const engine::ClipTokenizer& tokenizer)
    : models_(models), tokenizer_(tokenizer) {}

PipelineCache::~PipelineCache() = default;

absl::StatusOr<const engine::Sd1Pipeline*> PipelineCache::PipelineFor(const std::string& checkpoint,
                                                                      const std::optional<std::string>& vae,
                                                                      const StageReport& timing) {
  std::shared_ptr<const engine::Sd1Weights> weights = models_.current();
  if (!checkpoint.empty() || vae.has_value()) {
    // The VAE choice the model was loaded with carries over unless the job names one (sd_vae is its own option).
    const std::string wanted = !checkpoint.empty() ? checkpoint : weights ? weights->filename : std::string();
    std::string vae_request = vae.value_or(models_.current_vae_request());
    if (vae_request.empty()) vae_request = "Automatic";
    auto entry = models_.FindCheckpoint(wanted);
    if (!entry.ok()) return entry.status();
    const bool same = weights != nullptr && entry->filename == weights->filename &&
                      vae_request == models_.current_vae_request();
    if (!same) {
      StageTimer timer(timing, "load");
      weights.reset();
      Release();  // a switch must not hold two pipelines' worth of memory
      auto loaded = models_.Load(wanted, vae_request);  // the plugins hear of it from the manager
      if (!loaded.ok()) return loaded.status();
      weights = *loaded;
    }
  }
  if (weights == nullptr) {
    return absl::FailedPreconditionError("no checkpoint is loaded (it was unloaded after the job was queued)");
  }
  if (weights != weights_ || pipeline_ == nullptr) {
    lora_cache_.Clear();
    pipeline_.reset();
    embeddings_ = std::make_unique<engine::EmbeddingDatabase>(
        models_.folders() != nullptr
            ? engine::EmbeddingDatabase::Load(*models_.folders(), tokenizer_, weights->config.clip.hidden_size)
            : engine::EmbeddingDatabase());
    auto created = engine::Sd1Pipeline::Create(weights, tokenizer_, embeddings_.get());
    if (!created.ok()) return created.status();
    pipeline_ = *std::move(created);
    weights_ = weights;
  }
  return pipeline_.get();
}

void PipelineCache::Release() {
  lora_cache_.Clear();
  pipeline_.reset();
  embeddings_.reset();
  weights_.reset();
}

absl::StatusOr<const engine::Taesd*> PipelineCache::TaesdDecoder() {
  if (taesd_ == nullptr) {
    if (models_.folders() == nullptr) return absl::FailedPreconditionError("no models directory for VAE-approx/");
    auto loaded = engine::Taesd::LoadFromFolder(models_.folders()->FolderPath(engine::ModelFolder::kVaeApprox));
    if (!loaded.ok()) return loaded.status();
    taesd_ = *std::move(loaded);
  }
  return taesd_.get();
}

}  // namespace atelier::jobs
