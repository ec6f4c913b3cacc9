// The product's job runner: the gRPC side of a generation job. Prepare turns the request into the job layer's
// settings once and checks them against the daemon (jobs/job_check.h); Run hands them to the job layer
// (jobs/generation_job.h) with the job's context as its events, or runs a Plugins.Invoke job.
#pragma once

#include <memory>

#include "engine/models/model_manager.h"
#include "engine/text/clip_tokenizer.h"
#include "host/plugin_registry.h"
#include "jobs/job_cost.h"
#include "jobs/pipeline_cache.h"
#include "server/job_runner.h"

#include "engine/text/prompt_styles.h"
#include "server/request_limits.h"

namespace atelier::server {

class GenerationRunner final : public JobRunner {
 public:
  // All three must outlive the runner.
  GenerationRunner(engine::ModelManager& models, const host::PluginRegistry& plugins,
                   const engine::ClipTokenizer& tokenizer);
  ~GenerationRunner() override;

  // INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION naming the field and the valid choices (see JobCheck).
  absl::StatusOr<std::shared_ptr<const PreparedJob>> Prepare(v1::GenerateRequest& request) const override;
  // The loaded checkpoint's declared native size (modelspec.resolution) for a request without width / height that
  // runs on it; nothing (WebUI's 512) for undeclared sizes or a request naming another checkpoint.
  void FillDefaultSize(v1::GenerateRequest& request) const override;
  absl::Status Run(JobContext& context) override;
  void ReleaseModel() override;
  engine::LoraCatalog* loras() const override { return &models_.loras(); }
  const engine::ModelFolders* folders() const override { return models_.folders(); }
  // WebUI's prompt styles a request names (`styles`); null: none defined. Outlives the runner.
  void set_styles(const engine::PromptStyles* styles) { styles_ = styles; }
  // The operator's request limits (request_limits.h), checked in Prepare; set before serving.
  void set_limits(const RequestLimits& limits) { limits_ = limits; }

 private:
  engine::ModelManager& models_;
  const host::PluginRegistry& plugins_;
  const engine::ClipTokenizer& tokenizer_;
  RequestLimits limits_;
  jobs::PipelineCache pipelines_;  // executor thread only
  jobs::CostModel cost_;           // thread-safe: estimated at admission, calibrated by every finished job
  const engine::PromptStyles* styles_ = nullptr;
};

}  // namespace atelier::server
