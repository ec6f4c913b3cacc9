#include "control_model.h"

#include <algorithm>
#include <map>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace atelier::controlnet {
namespace {

constexpr const char* kPrefix = "control_model.";
constexpr int kHintConvs = 8;
// Output channels of input_hint_block's convolutions before the last (which makes model_channels), and the ones
// with stride 2 (the hint is 8x the latent).
constexpr int kHintWidths[kHintConvs - 1] = {16, 16, 32, 32, 96, 96, 256};
bool HintConvStrided(int k) { return k == 2 || k == 4 || k == 6; }

std::string ShapeText(const std::vector<std::int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }
std::string ShapeText(const at::Tensor& t) { return ShapeText(std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end())); }

const at::Tensor* Find(const engine::WeightMap& w, const std::string& name) {
  auto it = w.find(name);
  return it == w.end() ? nullptr : &it->second;
}

// Splits "a.b.c" into parts.
std::vector<std::string> Parts(const std::string& s) { return absl::StrSplit(s, '.'); }

int ToInt(const std::string& s) {
  int v = -1;
  return absl::SimpleAtoi(s, &v) ? v : -1;
}

// The ResBlock parameter names of diffusers (norm1, conv1, ...) in ldm's (in_layers.0, in_layers.2, ...).
std::string ResnetPart(const std::string& rest) {
  static const std::pair<const char*, const char*> kMap[] = {
      {"norm1.", "in_layers.0."},       {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
      {"norm2.", "out_layers.0."},      {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."}};
  for (const auto& [from, to] : kMap) {
    if (absl::StartsWith(rest, from)) return std::string(to) + rest.substr(std::string(from).size());
  }
  return "";
}

}  // namespace

std::string DiffusersToLdm(const std::string& name, int res_blocks) {
  const std::vector<std::string> p = Parts(name);
  auto tail = [&](size_t from) { return absl::StrJoin(p.begin() + from, p.end(), "."); };
  if (p.size() < 2) return "";
  if (p[0] == "time_embedding" && p.size() == 3) {
    if (p[1] == "linear_1") return "time_embed.0." + p[2];
    if (p[1] == "linear_2") return "time_embed.2." + p[2];
    return "";
  }
  if (p[0] == "conv_in" && p.size() == 2) return "input_blocks.0.0." + p[1];
  if (p[0] == "controlnet_cond_embedding") {
    if (p[1] == "conv_in" && p.size() == 3) return "input_hint_block.0." + p[2];
    if (p[1] == "conv_out" && p.size() == 3) return absl::StrCat("input_hint_block.", 2 * (kHintConvs - 1), ".", p[2]);
    if (p[1] == "blocks" && p.size() == 4 && ToInt(p[2]) >= 0) {
      return absl::StrCat("input_hint_block.", 2 * (ToInt(p[2]) + 1), ".", p[3]);
    }
    return "";
  }
  if (p[0] == "controlnet_down_blocks" && p.size() == 3 && ToInt(p[1]) >= 0) {
    return absl::StrCat("zero_convs.", p[1], ".0.", p[2]);
  }
  if (p[0] == "controlnet_mid_block" && p.size() == 2) return "middle_block_out.0." + p[1];
  if (p[0] == "down_blocks" && p.size() >= 5) {
    const int level = ToInt(p[1]);
    const int j = ToInt(p[3]);
    if (level < 0 || j < 0) return "";
    const int first = 1 + level * (res_blocks + 1);
    if (p[2] == "resnets") {
      const std::string r = ResnetPart(tail(4));
      return r.empty() ? "" : absl::StrCat("input_blocks.", first + j, ".0.", r);
    }
    if (p[2] == "attentions") return absl::StrCat("input_blocks.", first + j, ".1.", tail(4));
    if (p[2] == "downsamplers" && j == 0 && p[4] == "conv" && p.size() == 6) {
      return absl::StrCat("input_blocks.", (level + 1) * (res_blocks + 1), ".0.op.", p[5]);
    }
    return "";
  }
  if (p[0] == "mid_block" && p.size() >= 4) {
    const int j = ToInt(p[2]);
    if (p[1] == "resnets" && (j == 0 || j == 1)) {
      const std::string r = ResnetPart(tail(3));
      return r.empty() ? "" : absl::StrCat("middle_block.", 2 * j, ".", r);
    }
    if (p[1] == "attentions" && j == 0) return "middle_block.1." + tail(3);
  }
  return "";
}

absl::StatusOr<engine::WeightMap> NormalizeControlNetKeys(engine::WeightMap raw, const std::string& label) {
  engine::WeightMap out;
  // AnimateDiff's SparseCtrl (v3_sd15_sparsectrl_rgb / _scribble): a diffusers ControlNet with motion modules.
  for (const auto& [name, t] : raw) {
    if (name.find("motion_modules.") != std::string::npos) {
      return absl::UnimplementedError(absl::StrCat(
          "'", label, "' is an AnimateDiff SparseCtrl (a ControlNet with motion modules, ", name, "): not supported "
          "yet; use a v1.1 ControlNet with per-frame images, or the AnimateDiff v3 adapter as a LoRA"));
    }
  }
  if (raw.count("controlnet_cond_embedding.conv_in.weight") != 0) {
    if (raw.count("add_embedding.linear_1.weight") != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", label, "' is an SDXL ControlNet (add_embedding.*); Atelier runs SD1.x ControlNets"));
    }
    int res_blocks = 0;
    for (const auto& [name, t] : raw) {
      const auto p = Parts(name);
      if (p.size() > 3 && p[0] == "down_blocks" && p[1] == "0" && p[2] == "resnets") {
        res_blocks = std::max(res_blocks, ToInt(p[3]) + 1);
      }
    }
    std::vector<std::string> unknown;
    for (auto& [name, t] : raw) {
      std::string ldm = DiffusersToLdm(name, res_blocks);
      if (ldm.empty()) {
        unknown.push_back(name);
        continue;
      }
      out.emplace(std::move(ldm), std::move(t));
    }
    if (!unknown.empty() && out.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "': no diffusers ControlNet tensors"));
    }
  } else {
    const bool prefixed = raw.count(std::string(kPrefix) + "input_hint_block.0.weight") != 0;
    for (auto& [name, t] : raw) {
      if (prefixed) {
        if (!absl::StartsWith(name, kPrefix)) continue;  // the rest of a v1.0 full checkpoint (model.*, ...)
        out.emplace(name.substr(std::string(kPrefix).size()), std::move(t));
      } else {
        out.emplace(name, std::move(t));
      }
    }
  }
  if (out.count("input_hint_block.0.weight") == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", label, "' is not a ControlNet: it has no input_hint_block (a ControlNet file holds control_model.* "
                    "tensors, or diffusers' controlnet_cond_embedding.*)"));
  }
  if (out.count("label_emb.0.0.bias") != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", label, "' is an SDXL ControlNet (label_emb); Atelier runs SD1.x ControlNets"));
  }
  // sd-webui-controlnet reshapes linear proj_in/proj_out weights of SD1.x nets to 1x1 convolutions.
  for (auto& [name, t] : out) {
    if ((absl::EndsWith(name, ".proj_in.weight") || absl::EndsWith(name, ".proj_out.weight")) && t.dim() == 2) {
      t = t.reshape({t.size(0), t.size(1), 1, 1});
    }
  }
  return out;
}

absl::StatusOr<ControlNetConfig> InferControlNetConfig(const engine::WeightMap& w, const std::string& label) {
  auto need = [&](const std::string& name, int dims) -> absl::StatusOr<const at::Tensor*> {
    const at::Tensor* t = Find(w, name);
    if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("'", label, "' has no ", kPrefix, name));
    if (t->dim() != dims) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", label, "': ", kPrefix, name, " has shape ", ShapeText(*t), " (expected ", dims, " dims)"));
    }
    return t;
  };
  ControlNetConfig c;
  auto conv_in = need("input_blocks.0.0.weight", 4);
  if (!conv_in.ok()) return conv_in.status();
  auto hint_in = need("input_hint_block.0.weight", 4);
  if (!hint_in.ok()) return hint_in.status();
  c.unet.model_channels = static_cast<int>((*conv_in)->size(0));
  c.unet.in_channels = static_cast<int>((*conv_in)->size(1));
  c.hint_channels = static_cast<int>((*hint_in)->size(1));
  int blocks = 0, downsamples = 0;
  int context = -1;
  for (const auto& [name, t] : w) {
    const auto p = Parts(name);
    if (p.size() > 2 && p[0] == "input_blocks") {
      blocks = std::max(blocks, ToInt(p[1]) + 1);
      if (p.size() == 5 && p[2] == "0" && p[3] == "op" && p[4] == "weight") ++downsamples;
    }
    if (context < 0 && absl::EndsWith(name, ".attn2.to_k.weight") && t.dim() == 2) context = static_cast<int>(t.size(1));
  }
  const int levels = downsamples + 1;
  if (blocks < 1 + levels || (blocks - levels) % levels != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", label, "': ", blocks, " input blocks and ", downsamples, " downsamplers are not a UNet encoder"));
  }
  c.unet.num_res_blocks = (blocks - levels) / levels;
  c.unet.channel_mult.clear();
  c.unet.attention_resolutions.clear();
  c.unet.transformer_depth = 1;
  for (int l = 0; l < levels; ++l) {
    const int first = 1 + l * (c.unet.num_res_blocks + 1);
    auto out = need(absl::StrCat("input_blocks.", first, ".0.out_layers.3.weight"), 4);
    if (!out.ok()) return out.status();
    c.unet.channel_mult.push_back(static_cast<int>((*out)->size(0) / c.unet.model_channels));
    if (Find(w, absl::StrCat("input_blocks.", first, ".1.proj_in.weight")) != nullptr) {
      c.unet.attention_resolutions.push_back(1 << l);
      int depth = 0;
      while (Find(w, absl::StrCat("input_blocks.", first, ".1.transformer_blocks.", depth, ".norm1.weight")) != nullptr) {
        ++depth;
      }
      c.unet.transformer_depth = std::max(1, depth);
    }
  }
  if (context == 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", label, "' is an SD2.x ControlNet (cross-attention of width 1024); Atelier runs SD1.x ControlNets (768)"));
  }
  if (context <= 0) return absl::InvalidArgumentError(absl::StrCat("'", label, "' has no cross-attention"));
  c.unet.context_dim = context;
  c.unet.num_heads = 8;
  c.unet.out_channels = c.unet.in_channels;
  return c;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> ControlNetParameterShapes(const ControlNetConfig& c) {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> shapes;
  std::vector<std::int64_t> block_channels;  // each input block's output channels
  for (auto& [name, shape] : engine::UNet::ParameterShapes(c.unet)) {
    if (absl::StartsWith(name, "time_embed.") || absl::StartsWith(name, "input_blocks.") ||
        absl::StartsWith(name, "middle_block.")) {
      shapes.emplace_back(name, shape);
    }
  }
  std::int64_t in = c.hint_channels;
  for (int k = 0; k < kHintConvs; ++k) {
    const std::int64_t out = k + 1 < kHintConvs ? kHintWidths[k] : c.unet.model_channels;
    shapes.push_back({absl::StrCat("input_hint_block.", 2 * k, ".weight"), {out, in, 3, 3}});
    shapes.push_back({absl::StrCat("input_hint_block.", 2 * k, ".bias"), {out}});
    in = out;
  }
  const std::int64_t mc = c.unet.model_channels;
  block_channels.push_back(mc);
  for (size_t l = 0; l < c.unet.channel_mult.size(); ++l) {
    for (int j = 0; j < c.unet.num_res_blocks; ++j) block_channels.push_back(mc * c.unet.channel_mult[l]);
    if (l + 1 < c.unet.channel_mult.size()) block_channels.push_back(mc * c.unet.channel_mult[l]);
  }
  for (size_t i = 0; i < block_channels.size(); ++i) {
    const std::int64_t ch = block_channels[i];
    shapes.push_back({absl::StrCat("zero_convs.", i, ".0.weight"), {ch, ch, 1, 1}});
    shapes.push_back({absl::StrCat("zero_convs.", i, ".0.bias"), {ch}});
  }
  const std::int64_t deepest = mc * c.unet.channel_mult.back();
  shapes.push_back({"middle_block_out.0.weight", {deepest, deepest, 1, 1}});
  shapes.push_back({"middle_block_out.0.bias", {deepest}});
  return shapes;
}

ControlNetModel::~ControlNetModel() = default;

absl::StatusOr<std::unique_ptr<ControlNetModel>> ControlNetModel::Create(const engine::WeightMap& weights,
                                                                         const std::string& label, at::Device device,
                                                                         at::ScalarType dtype) {
  auto config = InferControlNetConfig(weights, label);
  if (!config.ok()) return config.status();
  // The exact key set and shapes this architecture needs: a missing or mis-shaped tensor names itself.
  std::vector<std::string> missing, misshaped;
  engine::WeightMap converted;
  std::int64_t bytes = 0;
  for (const auto& [name, shape] : ControlNetParameterShapes(*config)) {
    const at::Tensor* t = Find(weights, name);
    if (t == nullptr) {
      missing.push_back(kPrefix + name);
      continue;
    }
    if (std::vector<std::int64_t>(t->sizes().begin(), t->sizes().end()) != shape) {
      misshaped.push_back(absl::StrCat(kPrefix, name, " is ", ShapeText(*t), ", expected ", ShapeText(shape)));
      continue;
    }
    if (!at::isFloatingType(t->scalar_type())) {
      misshaped.push_back(absl::StrCat(kPrefix, name, " is not a floating-point tensor"));
      continue;
    }
    at::Tensor c = t->to(device, dtype);
    bytes += c.numel() * static_cast<std::int64_t>(c.element_size());
    converted.emplace(name, std::move(c));
  }
  auto listed = [](const std::vector<std::string>& v) {
    const size_t shown = std::min<size_t>(v.size(), 5);
    return absl::StrCat(absl::StrJoin(v.begin(), v.begin() + shown, "; "),
                        v.size() > shown ? absl::StrCat(" (and ", v.size() - shown, " more)") : "");
  };
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' is not a complete SD1.x ControlNet: ", missing.size(),
                                                   " tensor(s) missing: ", listed(missing)));
  }
  if (!misshaped.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' does not match the SD1.x ControlNet architecture: ",
                                                   listed(misshaped)));
  }
  auto encoder = engine::UNetEncoder::Create(config->unet, converted, "control_model");
  if (!encoder.ok()) return encoder.status();
  std::unique_ptr<ControlNetModel> m(new ControlNetModel());
  m->config_ = *config;
  m->encoder_ = std::move(*encoder);
  for (int k = 0; k < kHintConvs; ++k) {
    m->hint_convs_.emplace_back(converted.at(absl::StrCat("input_hint_block.", 2 * k, ".weight")),
                                converted.at(absl::StrCat("input_hint_block.", 2 * k, ".bias")));
  }
  // One zero conv per input block: 12 in SD1.x, fewer in a UNet of another shape (the embedded model's 4).
  const int levels = static_cast<int>(config->unet.channel_mult.size());
  const int input_blocks = 1 + levels * config->unet.num_res_blocks + (levels - 1);
  if (input_blocks + 1 > kResiduals) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' has ", input_blocks,
                                                   " input blocks; an SD1.x ControlNet has at most ", kResiduals - 1));
  }
  for (int i = 0; i < input_blocks; ++i) {
    m->zero_convs_.emplace_back(converted.at(absl::StrCat("zero_convs.", i, ".0.weight")),
                                converted.at(absl::StrCat("zero_convs.", i, ".0.bias")));
  }
  m->zero_convs_.emplace_back(converted.at("middle_block_out.0.weight"), converted.at("middle_block_out.0.bias"));
  m->bytes_ = bytes;
  return m;
}

at::Device ControlNetModel::device() const { return hint_convs_.front().first.device(); }
at::ScalarType ControlNetModel::dtype() const { return hint_convs_.front().first.scalar_type(); }
std::int64_t ControlNetModel::parameter_bytes() const { return bytes_; }

absl::StatusOr<at::Tensor> ControlNetModel::EncodeHint(const at::Tensor& hint) const {
  if (hint.dim() != 4 || hint.size(1) != config_.hint_channels || hint.size(2) < 8 || hint.size(3) < 8) {
    return absl::InvalidArgumentError(absl::StrCat("the control hint must be [n, ", config_.hint_channels,
                                                   ", H, W] with H, W >= 8, got ", ShapeText(hint)));
  }
  at::Tensor h = hint.to(device(), dtype());
  for (int k = 0; k < kHintConvs; ++k) {
    const int64_t stride = HintConvStrided(k) ? 2 : 1;
    h = at::conv2d(h, hint_convs_[k].first, hint_convs_[k].second, {stride, stride}, {1, 1});
    if (k + 1 < kHintConvs) h = at::silu(h);
  }
  return h;
}

absl::StatusOr<Residuals> ControlNetModel::Forward(const at::Tensor& x, const at::Tensor& timesteps,
                                                   const at::Tensor& context, const at::Tensor& guided_hint) const {
  if (guided_hint.defined() && (guided_hint.dim() != 4 || guided_hint.size(2) != x.size(2) ||
                                guided_hint.size(3) != x.size(3))) {
    return absl::InvalidArgumentError(absl::StrCat("the control hint encodes to ", ShapeText(guided_hint),
                                                   " but the latent is ", ShapeText(x),
                                                   ": the hint must be 8x the latent's size"));
  }
  auto out = encoder_->Forward(x, timesteps, context, guided_hint);
  if (!out.ok()) return out.status();
  Residuals r;
  // Skip i's residual at index i (a smaller UNet leaves the later ones undefined); the middle block's last.
  for (size_t i = 0; i + 1 < zero_convs_.size(); ++i) {
    r[i] = at::conv2d(out->input_blocks[i], zero_convs_[i].first, zero_convs_[i].second).to(at::kFloat);
  }
  r[kResiduals - 1] =
      at::conv2d(out->middle_block, zero_convs_.back().first, zero_convs_.back().second).to(at::kFloat);
  return r;
}

}  // namespace atelier::controlnet
