#include "engine/models/lora.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atelier::engine {
namespace {

std::string ShapeText(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// The parts a module may have (".weight" dropped from lora_up / lora_down / lora_mid).
const std::set<std::string> kParts = {"lora_up",   "lora_down", "lora_mid",  "alpha",     "scale",     "dora_scale",
                                      "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",   "hada_t2",
                                      "lokr_w1",   "lokr_w1_a", "lokr_w1_b", "lokr_w2",   "lokr_w2_a", "lokr_w2_b",
                                      "lokr_t2"};
// Parts of network kinds WebUI knows and this daemon does not (IA3, full diff, norm, GLoRA, OFT).
const std::set<std::string> kOtherKinds = {"weight", "diff", "diff_b", "w_norm", "b_norm", "a1.weight", "a2.weight",
                                           "b1.weight", "b2.weight", "oft_blocks", "oft_diag"};

// A file key as (module in kohya's flattened form, part): kohya's "<module>.<part>" split at the first dot, or a
// diffusers / PEFT dotted key ("unet.<path>.lora_A.weight", "text_encoder.<path>.lora.up.weight",
// "<path>.processor.to_q_lora.down.weight") turned into the kohya name of the same module.
std::optional<std::pair<std::string, std::string>> SplitKey(std::string key) {
  if (absl::StartsWith(key, "base_model.model.")) key = key.substr(strlen("base_model.model."));
  for (const auto& [prefix, kohya] : {std::pair<const char*, const char*>{"unet.", "lora_unet_"}, {"text_encoder.", "lora_te_"}}) {
    if (!absl::StartsWith(key, prefix)) continue;
    static const std::pair<const char*, const char*> kSuffixes[] = {
        {".lora_A.weight", "lora_down"},   {".lora_B.weight", "lora_up"},    {".lora.down.weight", "lora_down"},
        {".lora.up.weight", "lora_up"},    {"_lora.down.weight", "lora_down"}, {"_lora.up.weight", "lora_up"},
        {".lora_down.weight", "lora_down"}, {".lora_up.weight", "lora_up"},  {".alpha", "alpha"}};
    for (const auto& [suffix, part] : kSuffixes) {
      if (!absl::EndsWith(key, suffix)) continue;
      std::string path = key.substr(strlen(prefix), key.size() - strlen(prefix) - strlen(suffix));
      path = absl::StrReplaceAll(path, {{".processor.", "."}});
      if (absl::EndsWith(path, ".to_out")) path += ".0";  // attention processors name to_out.0 "to_out"
      return std::make_pair(kohya + absl::StrReplaceAll(path, {{".", "_"}}), std::string(part));
    }
    return std::nullopt;
  }
  const size_t dot = key.find('.');
  if (dot == std::string::npos) return std::nullopt;
  std::string part = key.substr(dot + 1);
  if (part == "lora_up.weight" || part == "lora_down.weight" || part == "lora_mid.weight" || part == "lora_A.weight" ||
      part == "lora_B.weight") {
    part = part.substr(0, part.size() - strlen(".weight"));
  }
  return std::make_pair(key.substr(0, dot), part);
}

// lyco_helpers.make_weight_cp: a Tucker core t [r, r, kh, kw] between wa [r, out] and wb [r, in].
at::Tensor Cp(const at::Tensor& t, const at::Tensor& wa, const at::Tensor& wb) {
  const at::Tensor temp = at::einsum("ijkl,jr->irkl", {t, wb.flatten(1)});
  return at::einsum("ijkl,ir->rjkl", {temp, wa.flatten(1)});
}

// ΔW for `shape`, also for an inpainting UNet's 9-channel input conv from a 4-channel LoRA (zero-padded, as
// networks.py pads it).
absl::StatusOr<at::Tensor> FullDelta(const LoraModule& m, at::IntArrayRef shape, int64_t dyn) {
  if (shape.size() == 4 && shape[1] == 9) {
    const std::vector<int64_t> four = {shape[0], 4, shape[2], shape[3]};
    auto small = LoraNetwork::Delta(m, four, dyn);
    if (small.ok()) return at::constant_pad_nd(*small, {0, 0, 0, 0, 0, 5});
  }
  return LoraNetwork::Delta(m, shape, dyn);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoraNetwork>> LoraNetwork::FromTensors(const std::map<std::string, at::Tensor>& tensors,
                                                                        const LoraNameMap& names,
                                                                        const std::string& label) {
  std::map<std::string, LoraModule> modules;
  std::set<std::string> ab_form;  // modules written as lora_A / lora_B: WebUI keeps only up and down (no alpha)
  std::vector<std::string> unknown, unsupported;
  for (const auto& [key, t] : tensors) {
    // AnimateDiff motion LoRAs: the motion module's layers, which the AnimateDiff plugin patches (the job hands it
    // the job's networks); WebUI's Lora likewise matches them only while a motion module is injected.
    if (key.find("motion_modules") != std::string::npos) continue;
    auto split = SplitKey(key);
    if (!split) {
      unknown.push_back(key);
      continue;
    }
    auto [module, part] = *split;
    if (part == "lora_A") part = "lora_down", ab_form.insert(module);
    if (part == "lora_B") part = "lora_up", ab_form.insert(module);
    if (kParts.count(part) == 0) {
      (kOtherKinds.count(part) ? unsupported : unknown).push_back(key);
      continue;
    }
    auto target = names.Find(module);
    if (!target) {
      unknown.push_back(key);
      continue;
    }
    LoraModule& m = modules[module];
    m.target = *target;
    m.w[part] = t.to(at::kFloat);
  }
  if (!unsupported.empty()) {
    return absl::UnimplementedError(absl::StrCat("'", label, "' is an IA3 / OFT / GLoRA / full-diff network (", unsupported[0],
                                                 "); LoRA, LoCon, LoHa and LoKr are supported"));
  }
  if (!unknown.empty()) {
    const size_t shown = std::min<size_t>(unknown.size(), 4);
    return absl::InvalidArgumentError(absl::StrCat(
        "'", label, "' has ", unknown.size(), " key(s) that name no module of this SD1.x model (a LoRA for another "
        "architecture?): ", absl::StrJoin(unknown.begin(), unknown.begin() + static_cast<std::ptrdiff_t>(shown), ", ")));
  }
  auto net = std::make_unique<LoraNetwork>();
  for (auto& [name, m] : modules) {
    auto has = [&m](const char* part) { return m.w.count(part) > 0; };
    std::optional<int64_t> dim;
    if (has("lora_up") && has("lora_down")) {
      m.kind = LoraModule::Kind::kLora;
      dim = m.w["lora_down"].size(0);
    } else if (has("hada_w1_a") && has("hada_w1_b") && has("hada_w2_a") && has("hada_w2_b")) {
      m.kind = LoraModule::Kind::kLoha;
      dim = m.w["hada_w1_b"].size(0);
    } else if ((has("lokr_w1") || (has("lokr_w1_a") && has("lokr_w1_b"))) &&
               (has("lokr_w2") || (has("lokr_w2_a") && has("lokr_w2_b")))) {
      m.kind = LoraModule::Kind::kLokr;
      if (has("lokr_w1_b")) dim = m.w["lokr_w1_b"].size(0);
      if (has("lokr_w2_b")) dim = m.w["lokr_w2_b"].size(0);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "': module ", name, " is incomplete (it has ",
                                                     absl::StrJoin(m.w, ", ", [](std::string* out, const auto& kv) {
                                                       out->append(kv.first);
                                                     }),
                                                     ")"));
    }
    if (ab_form.count(name)) {  // network_lora.py: the lora_A / lora_B form keeps up and down only
      m.w.erase("alpha");
      m.w.erase("scale");
      m.w.erase("dora_scale");
    }
    // network.py calc_scale.
    if (has("scale")) {
      m.scale = m.w["scale"].item<double>();
    } else if (dim && has("alpha")) {
      m.scale = m.w["alpha"].item<double>() / static_cast<double>(*dim);
    }
    if (!std::isfinite(m.scale)) return absl::InvalidArgumentError(absl::StrCat("'", label, "': module ", name, " has a non-finite scale"));
    net->modules_.push_back(std::move(m));
  }
  return net;
}

absl::StatusOr<at::Tensor> LoraNetwork::Delta(const LoraModule& m, at::IntArrayRef shape, int64_t dyn) {
  const auto get = [&m](const char* part) -> at::Tensor { return m.Get(part) ? *m.Get(part) : at::Tensor(); };
  at::Tensor updown;
  switch (m.kind) {
    case LoraModule::Kind::kLora: {
      const at::Tensor up = get("lora_up"), down = get("lora_down"), mid = get("lora_mid");
      if (mid.defined()) {
        // LoCon's Tucker form: rebuild the [r, r, kh, kw] core between down and up.
        updown = at::einsum("nmkl,in,mj->ijkl", {mid, up.flatten(1), down.flatten(1)});
      } else {
        at::Tensor u = up.flatten(1), d = down.flatten(1);
        if (dyn > 0 && dyn < d.size(0)) {
          u = u.slice(1, 0, dyn);
          d = d.slice(0, 0, dyn);
        }
        if (u.size(1) != d.size(0)) break;
        updown = u.mm(d);
      }
      break;
    }
    case LoraModule::Kind::kLoha: {
      const auto half = [&get](const char* a, const char* b, const char* t) -> at::Tensor {
        const at::Tensor wa = get(a), wb = get(b), core = get(t);
        if (core.defined()) return Cp(core, wa, wb);
        if (wa.size(1) != wb.size(0)) return at::Tensor();
        return wa.flatten(1).mm(wb.flatten(1));
      };
      const at::Tensor u1 = half("hada_w1_a", "hada_w1_b", "hada_t1"), u2 = half("hada_w2_a", "hada_w2_b", "hada_t2");
      if (!u1.defined() || !u2.defined() || u1.numel() != u2.numel()) break;
      updown = u1.reshape(u2.sizes()) * u2;
      break;
    }
    case LoraModule::Kind::kLokr: {
      at::Tensor w1 = m.Get("lokr_w1") ? get("lokr_w1") : get("lokr_w1_a").flatten(1).mm(get("lokr_w1_b").flatten(1));
      at::Tensor w2 = m.Get("lokr_w2")   ? get("lokr_w2")
                      : m.Get("lokr_t2") ? Cp(get("lokr_t2"), get("lokr_w2_a"), get("lokr_w2_b"))
                                         : get("lokr_w2_a").flatten(1).mm(get("lokr_w2_b").flatten(1));
      if (w2.dim() == 4) w1 = w1.reshape({w1.size(0), w1.size(1), 1, 1});
      updown = at::kron(w1, w2.contiguous());
      break;
    }
  }
  if (!updown.defined() || updown.numel() != c10::multiply_integers(shape)) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA module ", m.target.module, " makes ",
                                                   updown.defined() ? ShapeText(updown.sizes()) : "nothing",
                                                   " for a weight of ", ShapeText(shape)));
  }
  return (updown.reshape(shape) * m.scale).contiguous();
}

absl::StatusOr<LoraPatch> ApplyLoras(UNet* unet, ClipTextModel* text, const std::vector<LoraUse>& uses) {
  // Per parameter, every network's contribution in one float32 result: W + Σ m·s·up·down for plain LoRAs as fused
  // matrix products (addmm) over the kernels flattened to [out, in·kh·kw]; the other kinds through their full ΔW.
  struct Contribution {
    const LoraModule* module;
    double factor;
    int64_t dyn;
  };
  std::map<std::pair<int, std::string>, std::vector<Contribution>> by_param;
  for (const LoraUse& use : uses) {
    for (const LoraModule& m : use.network->modules()) {
      const bool te = m.target.part == LoraTarget::Part::kTextEncoder;
      if (te && text == nullptr) continue;
      by_param[{te ? 1 : 0, m.target.module + ".weight"}].push_back(
          {&m, te ? use.te_multiplier : use.unet_multiplier, use.dyn});
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
      if (m.kind == LoraModule::Kind::kLora && !m.Get("lora_mid") && !m.Get("dora_scale")) {
        at::Tensor up = m.Get("lora_up")->flatten(1).to(sum.device()), down = m.Get("lora_down")->flatten(1).to(sum.device());
        if (c.dyn > 0 && c.dyn < down.size(0)) {
          up = up.slice(1, 0, c.dyn);
          down = down.slice(0, 0, c.dyn);
        }
        if (up.size(0) == sum.size(0) && up.size(1) == down.size(0) && down.size(1) == sum.size(1)) {
          sum = fresh ? sum.addmm_(up, down, 1.0, c.factor * m.scale) : at::addmm(sum, up, down, 1.0, c.factor * m.scale);
          fresh = true;
          continue;
        }
      }
      auto delta = FullDelta(m, shape, c.dyn);
      if (!delta.ok()) return delta.status();
      at::Tensor d = delta->to(sum.device()).reshape({shape[0], -1});
      if (const at::Tensor* dora = m.Get("dora_scale")) {
        // network.py apply_weight_decompose: (W + ΔW) scaled to dora_scale / its norm per input channel, minus W.
        const at::Tensor weight = sum.reshape(shape);
        const at::Tensor merged = weight + d.reshape(shape);
        std::vector<int64_t> norm_shape(shape.size(), 1);
        norm_shape[1] = shape[1];
        const at::Tensor norm = merged.transpose(0, 1).reshape({shape[1], -1}).norm(2, {1}, true).reshape(norm_shape);
        d = (merged * (dora->to(sum.device()).reshape(norm_shape) / norm) - weight).reshape({shape[0], -1});
      }
      sum = fresh ? sum.add_(d, c.factor) : sum.add(d, c.factor);
      fresh = true;
    }
    // In the weight's own layout (channels-last convolutions stay so: same kernels, bit-identical at weight 0).
    const at::Tensor patched = sum.reshape(shape).to(w->scalar_type()).contiguous(w->suggest_memory_format());
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
