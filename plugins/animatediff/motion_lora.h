// Motion LoRAs (AnimateDiff v2's camera moves: ZoomIn, PanLeft, TiltUp, RollingClockwise, ...) as
// sd-webui-animatediff applies them: a LoRA file in models/Lora whose keys name the injected motion module's layers
// by their WebUI network-layer names ("down_blocks_0_motion_modules_0_temporal_transformer_transformer_blocks_0_
// attention_blocks_0_to_q.lora_up.weight", the conrevo repacks the extension asks for; a "lora_unet_" prefix is
// accepted) or in guoyww's original attention-processor form ("...attention_blocks.0.processor.to_q_lora.up.weight").
// W' = W + multiplier · scale · up · down, scale = alpha / rank (1 without alpha), as WebUI's network_lora computes.
#pragma once

#include <map>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "motion_module.h"

namespace atelier::animatediff {

// Whether any key of the file belongs to a motion module.
bool HasMotionKeys(const std::map<std::string, at::Tensor>& tensors);

// Adds the file's motion-module deltas, times `multiplier`, into `deltas` ((point, weight name) -> float32 ΔW).
// Keys of other modules are left to the UNet's LoRA patching. INVALID_ARGUMENT naming a key that names no layer of
// `set` (a v2 motion LoRA on a v1 / v3 module misses the mid block...), a kind other than LoRA, or a mis-shaped pair.
absl::Status AddMotionLora(const MotionModuleSet& set, const std::map<std::string, at::Tensor>& tensors,
                           double multiplier, const std::string& label,
                           std::map<std::pair<int, std::string>, at::Tensor>& deltas);

}  // namespace atelier::animatediff
