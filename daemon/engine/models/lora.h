// LoRA networks (kohya-ss sd-scripts' format, as WebUI's built-in Lora extension reads it): per module
// "<name>.lora_up.weight", "<name>.lora_down.weight", optional "<name>.alpha" (and "<name>.lora_mid.weight" for
// LoCon's Tucker form); linear and 1x1 / 3x3 convolution layers. ΔW = up · down · alpha / rank, computed in float32
// and added to the target weight times the text-encoder or UNet multiplier (WebUI's network_lora.py arithmetic).
// LoHa / LoKr files are recognised and refused by name.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/models/clip_text_model.h"
#include "engine/models/lora_names.h"
#include "engine/models/unet.h"

namespace atelier::engine {

struct LoraModule {
  LoraTarget target;
  at::Tensor up, down, mid;  // float32 (mid: LoCon's Tucker core, undefined otherwise)
  double alpha = 0;          // 0: none given (scale 1)
  int64_t rank() const { return down.size(0); }
  double scale() const { return alpha > 0 ? alpha / static_cast<double>(rank()) : 1.0; }
};

class LoraNetwork {
 public:
  // Every key must belong to a module of the model (`names`): unknown modules are INVALID_ARGUMENT naming them (a
  // LoRA for another architecture, e.g. SDXL's "lora_te1_"); LoHa / LoKr keys are UNIMPLEMENTED naming the kind.
  static absl::StatusOr<std::unique_ptr<LoraNetwork>> FromTensors(const std::map<std::string, at::Tensor>& tensors,
                                                                  const LoraNameMap& names, const std::string& label);

  const std::vector<LoraModule>& modules() const { return modules_; }

  // ΔW of a module (float32, the target weight's shape `shape`), before the multiplier.
  static absl::StatusOr<at::Tensor> Delta(const LoraModule& module, at::IntArrayRef shape);

 private:
  std::vector<LoraModule> modules_;
};

// One network in a job, with WebUI's two multipliers (<lora:name:te:unet>; one number sets both).
struct LoraUse {
  const LoraNetwork* network = nullptr;
  double te_multiplier = 1.0, unet_multiplier = 1.0;
};

// The model's weights before a patch, to put back exactly.
struct LoraPatch {
  std::vector<std::tuple<bool, std::string, at::Tensor>> originals;  // text encoder?, parameter, its tensor before
};

// W' = W + Σ multiplier · ΔW for every targeted parameter, summed in float32 and cast back to the weight's dtype
// (networks add, in any order). `text` may be null (its modules are then skipped). On failure nothing stays patched.
absl::StatusOr<LoraPatch> ApplyLoras(UNet* unet, ClipTextModel* text, const std::vector<LoraUse>& uses);
// Puts the original tensors back: the model is bit-identical to before ApplyLoras.
absl::Status RestoreLoras(UNet* unet, ClipTextModel* text, const LoraPatch& patch);

}  // namespace atelier::engine
