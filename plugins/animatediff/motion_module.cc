#include "motion_module.h"

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"

namespace atelier::animatediff {
namespace {

std::string ShapeText(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// Every tensor of one module, with its shape for C channels and P positions (P = 0: no position encoding).
std::vector<std::pair<std::string, std::vector<int64_t>>> ModuleShapes(int64_t c, int64_t p) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {"norm.weight", {c}}, {"norm.bias", {c}}, {"proj_in.weight", {c, c}}, {"proj_in.bias", {c}},
      {"proj_out.weight", {c, c}}, {"proj_out.bias", {c}}};
  const std::string block = "transformer_blocks.0.";
  for (int i = 0; i < 2; ++i) {
    const std::string a = absl::StrCat(block, "attention_blocks.", i, ".");
    for (const char* proj : {"to_q", "to_k", "to_v"}) out.push_back({absl::StrCat(a, proj, ".weight"), {c, c}});
    out.push_back({a + "to_out.0.weight", {c, c}});
    out.push_back({a + "to_out.0.bias", {c}});
    if (p > 0) out.push_back({a + "pos_encoder.pe", {1, p, c}});
    out.push_back({absl::StrCat(block, "norms.", i, ".weight"), {c}});
    out.push_back({absl::StrCat(block, "norms.", i, ".bias"), {c}});
  }
  out.push_back({block + "ff.net.0.proj.weight", {8 * c, c}});
  out.push_back({block + "ff.net.0.proj.bias", {8 * c}});
  out.push_back({block + "ff.net.2.weight", {c, 4 * c}});
  out.push_back({block + "ff.net.2.bias", {c}});
  out.push_back({block + "ff_norm.weight", {c}});
  out.push_back({block + "ff_norm.bias", {c}});
  return out;
}

}  // namespace

at::Tensor PositionEncoding(int64_t positions, int64_t c) {
  const at::Tensor position = at::arange(positions, at::kFloat).unsqueeze(1);
  const at::Tensor div = at::exp(at::arange(0, c, 2, at::kFloat) * (-std::log(10000.0) / static_cast<double>(c)));
  at::Tensor pe = at::zeros({1, positions, c}, at::kFloat);
  pe.select(0, 0).slice(1, 0, c, 2).copy_(at::sin(position * div));
  pe.select(0, 0).slice(1, 1, c, 2).copy_(at::cos(position * div));
  return pe;
}

const char* VersionName(MotionModuleVersion v) {
  switch (v) {
    case MotionModuleVersion::kV1: return "v1";
    case MotionModuleVersion::kV2: return "v2";
    case MotionModuleVersion::kV3: return "v3";
    case MotionModuleVersion::kAnimateLcm: return "AnimateLCM";
    case MotionModuleVersion::kAnimateDiffXl: return "AnimateDiff-XL";
    case MotionModuleVersion::kHotShotXl: return "HotShot-XL";
  }
  return "?";
}

MotionModuleVersion DetectVersion(const std::map<std::string, at::Tensor>& tensors) {
  bool mid = false, down3 = false, pe = false;
  int64_t pe_32 = false;
  for (const auto& [k, v] : tensors) {
    mid |= absl::StrContains(k, "mid_block");
    down3 |= absl::StrContains(k, "down_blocks.3");
    if (!pe && absl::StrContains(k, "pe")) {  // the extension's plain substring test, first such key
      pe = true;
      for (int64_t s : v.sizes()) pe_32 |= s == 32;
    }
  }
  if (mid) return pe ? MotionModuleVersion::kV2 : MotionModuleVersion::kAnimateLcm;
  if (down3) return pe_32 ? MotionModuleVersion::kV3 : MotionModuleVersion::kV1;
  return pe_32 ? MotionModuleVersion::kAnimateDiffXl : MotionModuleVersion::kHotShotXl;
}

std::string ModuleNameAt(int point, int levels, int per_level) {
  const int down = levels * per_level;
  if (point < down) return absl::StrCat("down_blocks.", point / per_level, ".motion_modules.", point % per_level);
  if (point == down) return "mid_block.motion_modules.0";
  const int j = point - down - 1;
  return absl::StrCat("up_blocks.", j / (per_level + 1), ".motion_modules.", j % (per_level + 1));
}

int PointCount(int levels, int per_level) { return levels * per_level + 1 + levels * (per_level + 1); }

void FuseQkv(TemporalModule& m) {
  for (int i = 0; i < 2; ++i) {
    const std::string a = absl::StrCat("transformer_blocks.0.attention_blocks.", i, ".");
    m.qkv[static_cast<size_t>(i)] = at::cat({m.W(a + "to_q.weight"), m.W(a + "to_k.weight"), m.W(a + "to_v.weight")}, 0);
  }
}

void TemporalAttentionCpu(const float* q, const float* k, const float* v, int64_t stride, float* out, int64_t videos,
                          int64_t frames, int64_t hw, int64_t heads, int64_t d, float scale) {
  const int64_t c = heads * d;
  at::parallel_for(0, videos * hw * heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> p(static_cast<size_t>(frames * frames)), kt(static_cast<size_t>(d * frames));
    for (int64_t b = begin; b < end; ++b) {
      const int64_t head = b % heads, pos = (b / heads) % hw, video = b / (heads * hw);
      const auto token = [&](int64_t f) { return (video * frames + f) * hw + pos; };
      // kᵀ [d, frames], so that each score row is a sum of contiguous axpys (vectorised over the frames) instead of
      // dot products (a serial reduction the compiler may not reorder).
      for (int64_t g = 0; g < frames; ++g) {
        const float* kg = k + token(g) * stride + head * d;
        for (int64_t i = 0; i < d; ++i) kt[static_cast<size_t>(i * frames + g)] = kg[i];
      }
      for (int64_t f = 0; f < frames; ++f) {
        const float* qf = q + token(f) * stride + head * d;
        float* row = p.data() + f * frames;
        std::fill(row, row + frames, 0.0f);
        for (int64_t i = 0; i < d; ++i) {
          const float qi = qf[i];
          const float* ki = kt.data() + i * frames;
          for (int64_t g = 0; g < frames; ++g) row[g] += qi * ki[g];
        }
        float top = -std::numeric_limits<float>::infinity();
        for (int64_t g = 0; g < frames; ++g) {
          row[g] *= scale;
          top = std::max(top, row[g]);
        }
        float sum = 0;
        for (int64_t g = 0; g < frames; ++g) sum += row[g] = std::exp(row[g] - top);
        const float inv = 1.0f / sum;
        float* o = out + token(f) * c + head * d;
        std::fill(o, o + d, 0.0f);
        for (int64_t g = 0; g < frames; ++g) {
          const float w = row[g] * inv;
          const float* vg = v + token(g) * stride + head * d;
          for (int64_t i = 0; i < d; ++i) o[i] += w * vg[i];
        }
      }
    }
  });
}

at::Tensor TemporalForward(const TemporalModule& m, const at::Tensor& hidden, int64_t frames) {
  const int64_t rows = hidden.size(0), c = hidden.size(1), h = hidden.size(2), w = hidden.size(3);
  const int64_t videos = rows / frames, hw = h * w, heads = 8, head_dim = c / heads;
  at::Tensor x = at::group_norm(hidden, 32, m.W("norm.weight"), m.W("norm.bias"), 1e-6);
  x = x.permute({0, 2, 3, 1}).reshape({rows, hw, c});
  x = at::linear(x, m.W("proj_in.weight"), m.W("proj_in.bias"));
  const std::string block = "transformer_blocks.0.";
  for (int i = 0; i < 2; ++i) {
    const std::string a = absl::StrCat(block, "attention_blocks.", i, ".");
    at::Tensor n = at::layer_norm(x, {c}, m.W(absl::StrCat(block, "norms.", i, ".weight")),
                                  m.W(absl::StrCat(block, "norms.", i, ".bias")), 1e-5);
    // The position encoding of each row's frame, broadcast over the positions ([videos, frames, hw, c]); q, k, v are
    // per-token projections, so only the attention itself needs the frames of a position side by side.
    n = n.view({videos, frames, hw, c}) + m.W(a + "pos_encoder.pe").slice(1, 0, frames).view({1, frames, 1, c});
    const at::Tensor& fused = m.qkv[static_cast<size_t>(i)];
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    at::Tensor out;
    if (fused.defined() && n.device().is_cpu() && n.scalar_type() == at::kFloat) {
      const at::Tensor qkv = at::linear(n, fused).contiguous();  // [videos, frames, hw, 3c]
      out = at::empty({rows, hw, c}, qkv.options());
      const float* base = qkv.data_ptr<float>();
      TemporalAttentionCpu(base, base + c, base + 2 * c, 3 * c, out.data_ptr<float>(), videos, frames, hw, heads,
                           head_dim, static_cast<float>(scale));
    } else {
      const auto split = [&](const at::Tensor& t) {  // [videos, frames, hw, c] -> [videos, hw, heads, frames, d]
        return t.view({videos, frames, hw, heads, head_dim}).permute({0, 2, 3, 1, 4});
      };
      const at::Tensor q = split(at::linear(n, m.W(a + "to_q.weight")));
      const at::Tensor k = split(at::linear(n, m.W(a + "to_k.weight")));
      const at::Tensor v = split(at::linear(n, m.W(a + "to_v.weight")));
      const at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).mul_(scale);
      // [videos, hw, heads, frames, d] -> [videos, frames, hw, heads·d]
      out = at::matmul(at::softmax(scores, -1), v).permute({0, 3, 1, 2, 4}).reshape({rows, hw, c});
    }
    out = at::linear(out, m.W(a + "to_out.0.weight"), m.W(a + "to_out.0.bias"));
    x = out + x;
  }
  const at::Tensor n = at::layer_norm(x, {c}, m.W(block + "ff_norm.weight"), m.W(block + "ff_norm.bias"), 1e-5);
  const auto parts = at::linear(n, m.W(block + "ff.net.0.proj.weight"), m.W(block + "ff.net.0.proj.bias")).chunk(2, -1);
  x = at::linear(parts[0] * at::gelu(parts[1]), m.W(block + "ff.net.2.weight"), m.W(block + "ff.net.2.bias")) + x;
  x = at::linear(x, m.W("proj_out.weight"), m.W("proj_out.bias"));
  return x.view({rows, h, w, c}).permute({0, 3, 1, 2}) + hidden;
}

absl::StatusOr<std::unique_ptr<MotionModuleSet>> MotionModuleSet::FromTensors(std::map<std::string, at::Tensor> tensors,
                                                                            const std::string& label,
                                                                            const at::Device& device,
                                                                            at::ScalarType dtype,
                                                                            std::optional<MotionModuleVersion> version) {
  try {
    for (const char* prefix : {"state_dict.", "module."}) {
      bool all = !tensors.empty();
      for (const auto& [k, v] : tensors) all &= absl::StartsWith(k, prefix);
      if (!all) continue;
      std::map<std::string, at::Tensor> stripped;
      for (auto& [k, v] : tensors) stripped[k.substr(strlen(prefix))] = v;
      tensors = std::move(stripped);
    }
    auto set = std::unique_ptr<MotionModuleSet>(new MotionModuleSet());
    set->version_ = version ? *version : DetectVersion(tensors);
    if (set->version_ == MotionModuleVersion::kAnimateDiffXl || set->version_ == MotionModuleVersion::kHotShotXl) {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "' is an ", VersionName(set->version_),
                                                     " motion module (SDXL); the loaded model is SD1.x: use an SD1.5 "
                                                     "module (v1, v2, v3 or AnimateLCM)"));
    }
    const bool lcm = set->version_ == MotionModuleVersion::kAnimateLcm;
    // The UNet shape from the names: down_blocks.<level>.motion_modules.<i> (SD1.x: 4 levels of 2).
    int levels = 0, per_level = 0;
    for (const auto& [k, v] : tensors) {
      int level = -1, index = -1;
      if (std::sscanf(k.c_str(), "down_blocks.%d.motion_modules.%d.", &level, &index) == 2 && level >= 0 &&
          index >= 0 && level < 16 && index < 16) {
        levels = std::max(levels, level + 1);
        per_level = std::max(per_level, index + 1);
      }
    }
    if (levels == 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "' has no down_blocks.*.motion_modules.* tensors: "
                                                     "not an AnimateDiff motion module"));
    }
    set->levels_ = levels;
    set->per_level_ = per_level;
    set->modules_.resize(static_cast<size_t>(PointCount(levels, per_level)));
    std::set<std::string> used;
    int64_t positions = 0;
    for (int point = 0; point < PointCount(levels, per_level); ++point) {
      const bool mid = point == levels * per_level;
      if (mid && set->version_ != MotionModuleVersion::kV2 && !lcm) continue;
      const std::string prefix = set->ModuleName(point) + ".temporal_transformer.";
      const auto norm = tensors.find(prefix + "norm.weight");
      if (norm == tensors.end()) {
        return absl::InvalidArgumentError(absl::StrCat("'", label, "' lacks ", prefix, "norm.weight (a ",
                                                       VersionName(set->version_), " motion module has it)"));
      }
      const int64_t c = norm->second.size(0);
      if (positions == 0 && !lcm) {
        const auto pe = tensors.find(prefix + "transformer_blocks.0.attention_blocks.0.pos_encoder.pe");
        if (pe == tensors.end() || pe->second.dim() != 3) {
          return absl::InvalidArgumentError(absl::StrCat("'", label, "' lacks ", prefix,
                                                         "transformer_blocks.0.attention_blocks.0.pos_encoder.pe"));
        }
        positions = pe->second.size(1);
      }
      auto module = std::make_unique<TemporalModule>();
      module->channels = c;
      if (c % 32 != 0) return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", prefix, " has ", c, " channels"));
      for (const auto& [name, shape] : ModuleShapes(c, lcm ? 0 : positions)) {
        const auto it = tensors.find(prefix + name);
        if (it == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("'", label, "' lacks ", prefix, name));
        if (it->second.sizes() != at::IntArrayRef(shape)) {
          return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", prefix, name, " is ",
                                                         ShapeText(it->second.sizes()), ", expected ", ShapeText(shape)));
        }
        used.insert(prefix + name);
        module->w[name] = it->second.to(device, dtype).contiguous();
      }
      if (lcm) {  // AnimateLCM keeps no buffers: the encodings are the fixed sinusoid
        for (int i = 0; i < 2; ++i) {
          module->w[absl::StrCat("transformer_blocks.0.attention_blocks.", i, ".pos_encoder.pe")] =
              PositionEncoding(64, c).to(device, dtype);
        }
      }
      FuseQkv(*module);
      set->modules_[static_cast<size_t>(point)] = std::move(module);
    }
    set->max_frames_ = lcm ? 64 : static_cast<int>(positions);
    for (const auto& [k, v] : tensors) {
      if (!used.count(k)) {
        return absl::InvalidArgumentError(absl::StrCat("'", label, "' has a tensor a ", VersionName(set->version_),
                                                       " motion module does not: ", k));
      }
    }
    return set;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", e.what()));
  }
}

absl::StatusOr<at::Tensor> MotionModuleSet::Forward(int point, const at::Tensor& hidden, int64_t frames) const {
  if (!HasPoint(point)) return hidden;
  const TemporalModule& m = *modules_[static_cast<size_t>(point)];
  if (hidden.dim() != 4 || hidden.size(1) != m.channels) {
    return absl::InvalidArgumentError(absl::StrCat("motion module ", ModuleName(point), " takes ", m.channels,
                                                   " channels; the UNet gave ", ShapeText(hidden.sizes())));
  }
  if (frames < 1 || frames > max_frames_ || hidden.size(0) % frames != 0) {
    return absl::InvalidArgumentError(absl::StrCat("motion module: ", hidden.size(0), " rows are not whole videos of ",
                                                   frames, " frames (at most ", max_frames_, ")"));
  }
  try {
    return TemporalForward(m, hidden, frames);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("motion module ", ModuleName(point), ": ", e.what()));
  }
}

std::string MotionModuleSet::Description() const {
  int count = 0;
  for (const auto& m : modules_) count += m != nullptr;
  return absl::StrCat("AnimateDiff motion module ", VersionName(version_), " (SD1.x), ", count, " modules, ",
                      max_frames_, " frames");
}

const at::Tensor* MotionModuleSet::Weight(int point, const std::string& name) const {
  if (!HasPoint(point)) return nullptr;
  const auto& w = modules_[static_cast<size_t>(point)]->w;
  const auto it = w.find(name);
  return it == w.end() ? nullptr : &it->second;
}

std::map<std::string, std::pair<int, std::string>> MotionModuleSet::LayerNames() const {
  std::map<std::string, std::pair<int, std::string>> names;
  for (int p = 0; p < static_cast<int>(modules_.size()); ++p) {
    if (!HasPoint(p)) continue;
    for (const auto& [name, t] : modules_[static_cast<size_t>(p)]->w) {
      if (t.dim() != 2 || !absl::EndsWith(name, ".weight")) continue;
      const std::string dotted = absl::StrCat(ModuleName(p), ".temporal_transformer.",
                                              name.substr(0, name.size() - strlen(".weight")));
      names[absl::StrReplaceAll(dotted, {{".", "_"}})] = {p, name};
    }
  }
  return names;
}

std::unique_ptr<MotionModuleSet> MotionModuleSet::Patched(
    const std::map<std::pair<int, std::string>, at::Tensor>& deltas) const {
  auto out = std::make_unique<MotionModuleSet>();
  out->version_ = version_;
  out->max_frames_ = max_frames_;
  out->levels_ = levels_;
  out->per_level_ = per_level_;
  out->modules_.resize(modules_.size());
  for (size_t p = 0; p < modules_.size(); ++p) {
    if (modules_[p] != nullptr) out->modules_[p] = std::make_unique<TemporalModule>(*modules_[p]);
  }
  for (const auto& [where, delta] : deltas) {
    at::Tensor& w = out->modules_[static_cast<size_t>(where.first)]->w.at(where.second);
    w = (w.to(at::kFloat) + delta.to(w.device(), at::kFloat)).to(w.scalar_type()).contiguous();
  }
  for (auto& m : out->modules_) {
    if (m != nullptr) FuseQkv(*m);
  }
  return out;
}

}  // namespace atelier::animatediff
