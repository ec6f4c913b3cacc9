// What executes jobs. The server owns the queue and streaming; a runner owns the work. The product's runner is
// the generation pipeline; tests plug in their own.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"
#include "engine/models/lora_catalog.h"
#include "server/job_context.h"

namespace atelier::server {

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Checks a request before it is queued and fills in runner-specific defaults. Errors reach the client at once.
  // What it returns (may be null) travels with the job to Run (context.prepared()): the request is parsed once.
  // Called on gRPC threads, concurrently: must not touch the device.
  virtual absl::StatusOr<std::shared_ptr<const PreparedJob>> Prepare(v1::GenerateRequest& request) const = 0;
  // Sets width / height where the request omits them, before validation (which fills WebUI's 512 for what is
  // still unset): e.g. the size the loaded checkpoint declares. Called on gRPC threads, concurrently.
  virtual void FillDefaultSize(v1::GenerateRequest& request) const { (void)request; }
  // Runs one job on the executor thread (the only thread that uses the device). Must call
  // context.ShouldStop() at every step boundary and return CANCELLED promptly when it is true.
  virtual absl::Status Run(JobContext& context) = 0;
  // The loaded model is about to change or go away (Models.LoadModel / UnloadModel, run on the executor between
  // jobs): drop whatever was built from it so its memory can be freed.
  virtual void ReleaseModel() {}
  // The LoRAs jobs can name (infotext "Lora hashes" lookups); null when the runner has none.
  virtual engine::LoraCatalog* loras() const { return nullptr; }
  // The models directory (upscaler files for Generation.Upscale); null when there is none.
  virtual const engine::ModelFolders* folders() const { return nullptr; }
};

}  // namespace atelier::server
