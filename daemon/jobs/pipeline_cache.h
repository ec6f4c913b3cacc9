// The models jobs run on: the pipeline of the loaded checkpoint (text encoder, UNet, VAE, schedule) built once per
// weights, the embeddings for it, and the TAESD preview decoder. Switching checkpoint (a job's
// override_settings.sd_model_checkpoint / sd_vae) loads the new one and tells the plugins. Executor thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/models/model_manager.h"
#include "engine/models/taesd.h"
#include "engine/pipeline/sd_pipeline.h"
#include "engine/text/clip_tokenizer.h"
#include "engine/text/embeddings.h"
#include "jobs/job_loras.h"
#include "jobs/upscaler_models.h"
#include "util/stage_timer.h"

namespace atelier::jobs {

class PipelineCache {
 public:
  // Both must outlive the cache.
  PipelineCache(engine::ModelManager& models, const engine::ClipTokenizer& tokenizer);
  ~PipelineCache();

  // The pipeline of the current checkpoint, or of `checkpoint` / `vae` when given (they stay loaded: loading is the
  // expensive part). Rebuilt only when the weights changed. A load is timed as "load".
  absl::StatusOr<const engine::Sd1Pipeline*> PipelineFor(const std::string& checkpoint,
                                                         const std::optional<std::string>& vae,
                                                         const StageReport& timing);
  absl::StatusOr<const engine::Taesd*> TaesdDecoder();
  // Drops what was built from the loaded model (before it is unloaded or replaced).
  void Release();

  engine::ModelManager& models() const { return models_; }
  // The last LoRA patch of the pipeline (see JobLoras); dropped with the pipeline.
  LoraPatchCache& lora_cache() { return lora_cache_; }
  // Upscaler nets (hires fix, Upscale requests); independent of the checkpoint.
  UpscalerModels& upscaler_models() { return upscaler_models_; }

 private:
  engine::ModelManager& models_;
  const engine::ClipTokenizer& tokenizer_;
  std::shared_ptr<const engine::Sd1Weights> weights_;
  std::unique_ptr<engine::EmbeddingDatabase> embeddings_;
  std::unique_ptr<engine::Sd1Pipeline> pipeline_;
  std::unique_ptr<engine::Taesd> taesd_;
  LoraPatchCache lora_cache_;
  UpscalerModels upscaler_models_;
};

}  // namespace atelier::jobs
