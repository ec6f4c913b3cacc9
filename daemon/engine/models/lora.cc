#include "engine/models/lora.h"

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atelier::engine {
namespace {

std::string ShapeText(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

}  // namespace

absl::StatusOr<std::unique_ptr<LoraNetwork>> LoraNetwork::FromTensors(const std::map<std::string, at::Tensor>& tensors,
                                                                        const LoraNameMap& names,
                                                                        const std::string& label) {
  std::map<std::string, LoraModule> modules;
  std::vector<std::string> unknown;
  for (const auto& [key, t] : tensors) {
    const size_t dot = key.find('.');
    if (dot == std::string::npos) {
      unknown.push_back(key);
      continue;
    }
    const std::string module = key.substr(0, dot), part = key.substr(dot + 1);
    if (absl::StartsWith(part, "hada_")) {
      return absl::UnimplementedError(absl::StrCat("'", label, "' is a LoHa (", key, "): not supported yet; LoRA and LoCon are"));
    }
    if (absl::StartsWith(part, "lokr_")) {
      return absl::UnimplementedError(absl::StrCat("'", label, "' is a LoKr (", key, "): not supported yet; LoRA and LoCon are"));
    }
    if (part != "lora_up.weight" && part != "lora_down.weight" && part != "alpha" && part != "lora_mid.weight") {
      unknown.push_back(key);
      continue;
    }
    auto target = names.Find(module);
    if (!target) {
      unknown.push_back(key);
      continue;
    }
    LoraModule& m = modules[module];
    m.target = *target;
    const at::Tensor f = t.to(at::kFloat);
    if (part == "lora_up.weight") m.up = f;
    if (part == "lora_down.weight") m.down = f;
    if (part == "lora_mid.weight") m.mid = f;
    if (part == "alpha") m.alpha = f.item<double>();
  }
  if (!unknown.empty()) {
    const size_t shown = std::min<size_t>(unknown.size(), 4);
    return absl::InvalidArgumentError(absl::StrCat(
        "'", label, "' has ", unknown.size(), " key(s) that name no module of this SD1.x model (a LoRA for another "
        "architecture?): ", absl::StrJoin(unknown.begin(), unknown.begin() + static_cast<std::ptrdiff_t>(shown), ", ")));
  }
  auto net = std::make_unique<LoraNetwork>();
  for (auto& [name, m] : modules) {
    if (!m.up.defined() || !m.down.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "': module ", name, " lacks lora_up or lora_down"));
    }
    net->modules_.push_back(std::move(m));
  }
  return net;
}

absl::StatusOr<at::Tensor> LoraNetwork::Delta(const LoraModule& m, at::IntArrayRef shape) {
  const at::Tensor& up = m.up;
  const at::Tensor& down = m.down;
  at::Tensor updown;
  if (m.mid.defined()) {
    // LoCon's Tucker form: rebuild the [r, r, kh, kw] core between down and up.
    updown = at::einsum("nmkl,in,mj->ijkl", {m.mid, up.flatten(1), down.flatten(1)});
  } else if (up.dim() == 2 && down.dim() == 2) {
    updown = up.mm(down);
  } else if (up.dim() == 4 && down.dim() == 4 && up.size(2) == 1 && up.size(3) == 1) {
    // 1x1 up after a 1x1 or kxk down: the product of the flattened kernels.
    updown = up.flatten(1).mm(down.flatten(1)).reshape({up.size(0), down.size(1), down.size(2), down.size(3)});
  } else {
    return absl::InvalidArgumentError(absl::StrCat("LoRA module ", m.target.module, ": up ", ShapeText(up.sizes()),
                                                   " and down ", ShapeText(down.sizes()), " do not form a weight"));
  }
  if (updown.numel() != c10::multiply_integers(shape)) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA module ", m.target.module, " makes ", ShapeText(updown.sizes()),
                                                   " for a weight of ", ShapeText(shape)));
  }
  return (updown.reshape(shape) * m.scale()).contiguous();
}

absl::StatusOr<LoraPatch> ApplyLoras(UNet* unet, ClipTextModel* text, const std::vector<LoraUse>& uses) {
  // Per parameter, every network's contribution in one float32 result: W + Σ m·s·up·down, as fused matrix
  // products (addmm) over the kernels flattened to [out, in·kh·kw]; Tucker cores through their full ΔW.
  struct Contribution {
    const LoraModule* module;
    double factor;
  };
  std::map<std::pair<int, std::string>, std::vector<Contribution>> by_param;
  for (const LoraUse& use : uses) {
    for (const LoraModule& m : use.network->modules()) {
      const bool te = m.target.part == LoraTarget::Part::kTextEncoder;
      if (te && text == nullptr) continue;
      by_param[{te ? 1 : 0, m.target.module + ".weight"}].push_back({&m, te ? use.te_multiplier : use.unet_multiplier});
    }
  }
  LoraPatch patch;
  for (const auto& [key, contributions] : by_param) {
    const bool te = key.first == 1;
    auto w = te ? text->Parameter(key.second) : unet->Parameter(key.second);
    if (!w.ok()) return w.status();
    const at::IntArrayRef shape = w->sizes();
    at::Tensor sum = w->to(at::kFloat).reshape({shape[0], -1});
    bool fresh = false;  // `sum` is still the weight itself (no new tensor yet)
    for (const Contribution& c : contributions) {
      const LoraModule& m = *c.module;
      const double alpha = c.factor * m.scale();
      if (m.mid.defined()) {
        auto delta = LoraNetwork::Delta(m, shape);
        if (!delta.ok()) return delta.status();
        sum = fresh ? sum.add_(delta->reshape({shape[0], -1}), c.factor) : sum.add(delta->reshape({shape[0], -1}), c.factor);
      } else {
        const at::Tensor up = m.up.flatten(1).to(sum.device()), down = m.down.flatten(1).to(sum.device());
        if (up.size(0) != sum.size(0) || up.size(1) != down.size(0) || down.size(1) != sum.size(1)) {
          return absl::InvalidArgumentError(absl::StrCat("LoRA module ", m.target.module, ": up ",
                                                         ShapeText(m.up.sizes()), " and down ", ShapeText(m.down.sizes()),
                                                         " do not fit the weight ", ShapeText(shape)));
        }
        sum = fresh ? sum.addmm_(up, down, 1.0, alpha) : at::addmm(sum, up, down, 1.0, alpha);
      }
      fresh = true;
    }
    const at::Tensor patched = sum.reshape(shape).to(w->scalar_type());
    absl::Status s = te ? text->ReplaceParameter(key.second, patched) : unet->ReplaceParameter(key.second, patched);
    if (!s.ok()) {
      (void)RestoreLoras(unet, text, patch);
      return s;
    }
    patch.originals.push_back({te, key.second, *w});
  }
  return patch;
}

absl::Status RestoreLoras(UNet* unet, ClipTextModel* text, const LoraPatch& patch) {
  for (const auto& [te, name, original] : patch.originals) {
    absl::Status s = te ? text->ReplaceParameter(name, original) : unet->ReplaceParameter(name, original);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace atelier::engine
