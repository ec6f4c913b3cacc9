// The LoRA networks a job's prompts name (<lora:name:w>, <lora:name:te_w:unet_w>, the <lyco:...> alias), applied
// to the job's pipeline while the job runs and taken off exactly when it ends, as WebUI's extra networks activate
// per job. Files come from models/Lora and models/LyCORIS, matched by file name (stem) as WebUI's extra networks
// page names them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/io/model_folders.h"
#include "engine/models/lora.h"
#include "engine/pipeline/sd_pipeline.h"

namespace atelier::jobs {

class JobLoras {
 public:
  // Nothing to do (null) when the prompts name no LoRA. NOT_FOUND naming the missing network and listing the ones
  // there are; INVALID_ARGUMENT for a bad multiplier or a file that is not an SD1.x LoRA.
  static absl::StatusOr<std::unique_ptr<JobLoras>> Apply(engine::Sd1Pipeline& pipeline,
                                                         const engine::ModelFolders* folders,
                                                         const std::vector<std::string>& prompts);
  ~JobLoras();  // restores the weights
  JobLoras(const JobLoras&) = delete;
  JobLoras& operator=(const JobLoras&) = delete;

 private:
  JobLoras() = default;
  engine::Sd1Pipeline* pipeline_ = nullptr;
  std::vector<std::unique_ptr<engine::LoraNetwork>> networks_;
  engine::LoraPatch patch_;
};

}  // namespace atelier::jobs
