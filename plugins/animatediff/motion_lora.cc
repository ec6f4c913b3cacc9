#include "motion_lora.h"

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace atelier::animatediff {
namespace {

struct LoraPair {
  at::Tensor up, down, alpha;
};

// (layer name with '_', part) of a key, or false for a key of another module.
bool SplitMotionKey(const std::string& key, std::string& layer, std::string& part) {
  if (key.find("motion_modules") == std::string::npos) return false;
  const size_t processor = key.find("_lora.");
  if (processor != std::string::npos) {  // guoyww: "<module>.processor.to_q_lora.up.weight"
    std::string module = absl::StrReplaceAll(key.substr(0, processor), {{"processor.", ""}});
    if (absl::EndsWith(module, ".to_out")) module += ".0";
    layer = absl::StrReplaceAll(module, {{".", "_"}});
    part = key.substr(processor + strlen("_lora."));  // "up.weight" / "down.weight"
    part = absl::StartsWith(part, "up") ? "lora_up.weight" : absl::StartsWith(part, "down") ? "lora_down.weight" : part;
    return true;
  }
  const size_t dot = key.find('.');
  if (dot == std::string::npos) return false;
  layer = key.substr(0, dot);
  for (const char* prefix : {"lora_unet_", "diffusion_model_"}) {
    if (absl::StartsWith(layer, prefix)) layer = layer.substr(strlen(prefix));
  }
  part = key.substr(dot + 1);
  return true;
}

}  // namespace

bool HasMotionKeys(const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& [key, t] : tensors) {
    if (key.find("motion_modules") != std::string::npos) return true;
  }
  return false;
}

absl::Status AddMotionLora(const MotionModuleSet& set, const std::map<std::string, at::Tensor>& tensors,
                           double multiplier, const std::string& label,
                           std::map<std::pair<int, std::string>, at::Tensor>& deltas) {
  const auto layers = set.LayerNames();
  std::map<std::string, LoraPair> pairs;
  for (const auto& [key, t] : tensors) {
    std::string layer, part;
    if (!SplitMotionKey(key, layer, part)) continue;
    if (layers.count(layer) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("motion LoRA '", label, "' has key ", key.substr(0, 160),
                                                     ", which names no layer of the loaded motion module (",
                                                     set.Description(), "; motion LoRAs are made for v2 modules)"));
    }
    LoraPair& p = pairs[layer];
    if (part == "lora_up.weight") {
      p.up = t.to(at::kFloat);
    } else if (part == "lora_down.weight") {
      p.down = t.to(at::kFloat);
    } else if (part == "alpha") {
      p.alpha = t.to(at::kFloat);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("motion LoRA '", label, "': key ", key.substr(0, 160),
                                                     " is not a LoRA up / down / alpha tensor (only LoRA is supported "
                                                     "for motion modules)"));
    }
  }
  for (const auto& [layer, p] : pairs) {
    const auto& [point, name] = layers.at(layer);
    const at::Tensor* w = set.Weight(point, name);
    if (!p.up.defined() || !p.down.defined() || p.up.dim() != 2 || p.down.dim() != 2 || w == nullptr ||
        p.up.size(0) != w->size(0) || p.down.size(1) != w->size(1) || p.up.size(1) != p.down.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat("motion LoRA '", label, "': layer ", layer,
                                                     " needs lora_up [out, r] and lora_down [r, in] matching its weight"));
    }
    const double rank = static_cast<double>(p.down.size(0));
    const double scale = p.alpha.defined() ? p.alpha.item<double>() / rank : 1.0;
    const at::Tensor delta = at::mm(p.up, p.down) * (scale * multiplier);
    at::Tensor& sum = deltas[{point, name}];
    sum = sum.defined() ? sum + delta : delta;
  }
  return absl::OkStatus();
}

}  // namespace atelier::animatediff
