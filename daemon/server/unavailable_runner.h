// The product's job runner until the generation pipelines land: it refuses every request at admission with
// UNIMPLEMENTED, so a client learns at once instead of after queueing.
#pragma once

#include "server/job_runner.h"

namespace atelier::server {

class UnavailableRunner final : public JobRunner {
 public:
  absl::Status Prepare(v1::GenerateRequest&) const override {
    return absl::UnimplementedError(
        "this build of atelierd cannot generate images yet (no txt2img/img2img pipeline); health, version, models "
        "and plugins work");
  }
  absl::Status Run(JobContext&) override { return absl::UnimplementedError("no generation pipeline"); }
};

}  // namespace atelier::server
