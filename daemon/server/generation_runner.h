// The product's job runner: txt2img and img2img on the loaded checkpoint (engine::Generate), with the plugins'
// hooks, per-step progress and live previews, and each finished image streamed as a result (PNG/JPEG/WebP with
// WebUI's infotext).
#pragma once

#include <memory>
#include <mutex>

#include "engine/clip_tokenizer.h"
#include "engine/embeddings.h"
#include "engine/model_manager.h"
#include "engine/sd_pipeline.h"
#include "engine/taesd.h"
#include "host/plugin_registry.h"
#include "server/job_runner.h"

namespace atelier::server {

class GenerationRunner final : public JobRunner {
 public:
  // All three must outlive the runner.
  GenerationRunner(engine::ModelManager& models, const host::PluginRegistry& plugins,
                   const engine::ClipTokenizer& tokenizer);
  ~GenerationRunner() override;

  // Validates the request against what this daemon has: sampler/scheduler names, option types, the checkpoint and
  // VAE it names (NOT_FOUND listing what exists), a loaded model (FAILED_PRECONDITION), a decodable init image, a
  // TAESD decoder for TAESD previews (FAILED_PRECONDITION naming the folder).
  absl::Status Prepare(v1::GenerateRequest& request) const override;
  absl::Status Run(JobContext& context) override;
  void ReleaseModel() override;

 private:
  absl::Status Check(const v1::GenerateRequest& request) const;
  // The pipeline of the current (or the requested) checkpoint, rebuilt only when the weights changed.
  absl::StatusOr<const engine::Sd1Pipeline*> PipelineFor(const std::string& checkpoint,
                                                         const std::optional<std::string>& vae, JobContext& context);
  absl::StatusOr<const engine::Taesd*> TaesdDecoder();

  engine::ModelManager& models_;
  const host::PluginRegistry& plugins_;
  const engine::ClipTokenizer& tokenizer_;

  // Executor thread only.
  std::shared_ptr<const engine::Sd1Weights> pipeline_weights_;
  std::unique_ptr<engine::EmbeddingDatabase> embeddings_;
  std::unique_ptr<engine::Sd1Pipeline> pipeline_;
  std::unique_ptr<engine::Taesd> taesd_;
};

}  // namespace atelier::server
