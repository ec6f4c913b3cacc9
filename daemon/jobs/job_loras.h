// The LoRA networks a job's prompts name (<lora:name:w>, <lora:name:te_w:unet_w>, the named te= / unet= forms and
// the <lyco:...> alias), applied to the job's pipeline while the job runs and taken off exactly when it ends, as
// WebUI's extra networks activate per job. Files come from the model manager's LoraCatalog (models/Lora and
// models/LyCORIS, by name or alias). The multipliers hold for the whole job: WebUI's prompt editing does not reach
// inside <lora:...> tags (they are removed before the schedule is parsed), so a LoRA's weight cannot change per step.
//
// Patching costs one pass over the affected weights; a job naming the same networks and multipliers as the
// previous LoRA job on the same pipeline swaps the patched tensors back in instead (LoraPatchCache), the way WebUI
// keeps its patched weights while the networks stay the same.
#pragma once

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/models/lora.h"
#include "engine/models/lora_catalog.h"
#include "engine/pipeline/sd_pipeline.h"

namespace atelier::jobs {

// One <lora:...> of a prompt.
struct LoraRequest {
  std::string name;       // as written (WebUI's mentioned_name)
  double te = 1, unet = 1;
  int64_t dyn = 0;  // dyn=: the first ranks only (0: all)
};

// The LoRA tags of the prompts, each network once (INVALID_ARGUMENT for a tag without a name or a multiplier that
// is not a number within +-100).
absl::StatusOr<std::vector<LoraRequest>> LorasInPrompts(const std::vector<std::string>& prompts);

// For admission: every LoRA the prompts name exists (NOT_FOUND naming the nearest ones), unless `lenient`.
absl::Status CheckLoras(engine::LoraCatalog& catalog, const std::vector<std::string>& prompts, bool lenient);

// The last LoRA set patched into a pipeline, kept while not in use so the next job with the same set pays nothing.
struct LoraPatchCache {
  const engine::Sd1Pipeline* pipeline = nullptr;
  std::string key;  // files (path, size, mtime) and multipliers
  std::vector<std::tuple<bool, std::string, at::Tensor>> patched;  // text encoder?, parameter, patched tensor
  void Clear() { *this = LoraPatchCache(); }
};

class JobLoras {
 public:
  // Nothing to do (null) when the prompts name no LoRA. NOT_FOUND naming the missing network and the nearest ones
  // (or, when `lenient`, a warning in `warnings` and the network skipped, as WebUI does); INVALID_ARGUMENT for a bad
  // multiplier or a file that is not an SD1.x LoRA.
  static absl::StatusOr<std::unique_ptr<JobLoras>> Apply(engine::Sd1Pipeline& pipeline, engine::LoraCatalog& catalog,
                                                         LoraPatchCache& cache,
                                                         const std::vector<std::string>& prompts, bool lenient,
                                                         std::vector<std::string>* warnings);
  ~JobLoras();  // restores the weights
  JobLoras(const JobLoras&) = delete;
  JobLoras& operator=(const JobLoras&) = delete;

  // WebUI's infotext value of "Lora hashes" ("name: 0123456789ab, other: ..."); empty when no file has a hash.
  const std::string& hashes_infotext() const { return hashes_; }
  // Whether the patch came from the cache (no weights computed).
  bool reused() const { return reused_; }
  // The networks for plugins (atelier_job_info.loras_json): [{"name", "filename", "te", "unet", "dyn"}].
  const std::string& networks_json() const { return networks_json_; }

 private:
  JobLoras() = default;
  engine::Sd1Pipeline* pipeline_ = nullptr;
  engine::LoraPatch patch_;
  std::string hashes_;
  std::string networks_json_ = "[]";
  bool reused_ = false;
};

// The <lora:NAME: names of an infotext prompt renamed to the local network whose AutoV3 short hash the infotext's
// "Lora hashes" gives for NAME (WebUI's infotext_pasted), so a pasted prompt finds files that were renamed.
std::string RenameLorasByHash(const std::string& prompt, const std::string& lora_hashes, engine::LoraCatalog& catalog);

}  // namespace atelier::jobs
