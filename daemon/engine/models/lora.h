// LoRA / LyCORIS networks as WebUI's built-in Lora extension reads them (network_lora.py, network_hada.py,
// network_lokr.py, network.py's finalize_updown):
//  - LoRA / LoCon: "<module>.lora_up.weight" + ".lora_down.weight" (optional ".lora_mid.weight", the Tucker core);
//    linear, 1x1 and kxk convolutions. Also the "lora_B" / "lora_A" spelling (WebUI then ignores alpha).
//  - LoHa: hada_w1_a/b, hada_w2_a/b (optional hada_t1/t2): ΔW = (w1a·w1b) ⊙ (w2a·w2b).
//  - LoKr: lokr_w1 or lokr_w1_a·lokr_w1_b, lokr_w2 or lokr_w2_a·lokr_w2_b (optional lokr_t2): ΔW = w1 ⊗ w2.
//  - scale: a "scale" tensor, else alpha / dim (dim: the rank), else 1; DoRA's dora_scale re-normalises W + ΔW per
//    input channel. W' = W + multiplier · finish(ΔW · scale), in float32, cast back to the weight's dtype.
// Module names: kohya's ("lora_unet_...", "lora_te_text_model_..."; see lora_names.h) and the diffusers / PEFT
// dotted forms ("unet.down_blocks.0....to_q.lora_A.weight", "text_encoder.text_model....", attention processors'
// "....processor.to_q_lora.up.weight"), which WebUI cannot read for SD1.x but other tools write.
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
  enum class Kind { kLora, kLoha, kLokr };
  LoraTarget target;
  Kind kind = Kind::kLora;
  // The module's tensors in float32 by part name without ".weight" ("lora_up", "hada_w1_a", "lokr_w1", "alpha",
  // "scale", "dora_scale"); LoRA's lora_A / lora_B are stored as lora_down / lora_up.
  std::map<std::string, at::Tensor> w;
  double scale = 1.0;  // WebUI's calc_scale
  const at::Tensor* Get(const std::string& part) const {
    const auto it = w.find(part);
    return it == w.end() ? nullptr : &it->second;
  }
};

class LoraNetwork {
 public:
  // Every key must belong to a module of the model (`names`): unknown modules or parts are INVALID_ARGUMENT naming
  // them (a LoRA for another architecture, e.g. SDXL's "lora_te1_"; an IA3 / OFT / GLoRA network).
  static absl::StatusOr<std::unique_ptr<LoraNetwork>> FromTensors(const std::map<std::string, at::Tensor>& tensors,
                                                                  const LoraNameMap& names, const std::string& label);

  const std::vector<LoraModule>& modules() const { return modules_; }

  // ΔW of a module (float32, the target weight's shape `shape`), scaled, before DoRA and the multiplier. `dyn`:
  // WebUI's dyn= (the first `dyn` ranks of a plain LoRA; 0 = all).
  static absl::StatusOr<at::Tensor> Delta(const LoraModule& module, at::IntArrayRef shape, int64_t dyn = 0);

 private:
  std::vector<LoraModule> modules_;
};

// One network in a job, with WebUI's two multipliers (<lora:name:te:unet>; one number sets both).
struct LoraUse {
  const LoraNetwork* network = nullptr;
  double te_multiplier = 1.0, unet_multiplier = 1.0;
  int64_t dyn = 0;  // <lora:name:te:unet:dyn>: the first `dyn` ranks only (0: all)
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
