#include "engine/upscale/esrgan_net.h"

#include <ATen/ATen.h>

#include <cmath>
#include <regex>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/io/tensor_file.h"

namespace atelier::engine {
namespace {

std::string ShapeText(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// spandrel's canonicalize_state_dict: the first wrapper present, then the common "module." / "netG." prefixes.
std::map<std::string, at::Tensor> Unwrap(std::map<std::string, at::Tensor> t) {
  for (const char* wrapper : {"model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net"}) {
    const std::string prefix = absl::StrCat(wrapper, ".");
    std::map<std::string, at::Tensor> inner;
    for (const auto& [k, v] : t) {
      if (absl::StartsWith(k, prefix)) inner[k.substr(prefix.size())] = v;
    }
    // "model." is also the old ESRGAN layout's own prefix: only a wrapper when it holds a known layout.
    if (!inner.empty() && (std::string(wrapper) != "model" || inner.count("conv_first.weight") || inner.count("body.0.weight"))) {
      t = std::move(inner);
      break;
    }
  }
  for (const char* prefix : {"module.", "netG."}) {
    bool all = !t.empty();
    for (const auto& [k, v] : t) all &= absl::StartsWith(k, prefix);
    if (!all) continue;
    std::map<std::string, at::Tensor> stripped;
    for (const auto& [k, v] : t) stripped[k.substr(strlen(prefix))] = v;
    t = std::move(stripped);
  }
  return t;
}

// The largest integer N of "<prefix>N." keys, or -1.
int MaxIndex(const std::map<std::string, at::Tensor>& t, const std::string& prefix) {
  int best = -1;
  for (const auto& [k, v] : t) {
    if (!absl::StartsWith(k, prefix)) continue;
    const std::string rest = k.substr(prefix.size());
    int n = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find('.')), &n)) best = std::max(best, n);
  }
  return best;
}

// spandrel's _new_to_old_arch: BasicSR and BSRGAN names to the old ESRGAN sequential's.
absl::StatusOr<std::map<std::string, at::Tensor>> ToOldLayout(const std::map<std::string, at::Tensor>& t) {
  if (t.count("model.0.weight")) return t;
  const std::string body = t.count("body.0.rdb1.conv1.weight") ? "body." : "RRDB_trunk.";
  const int nb = MaxIndex(t, body) + 1;
  int up = 0;
  for (const auto& [k, v] : t) {
    for (const char* p : {"conv_up", "upconv"}) {
      int n = 0;
      if (absl::StartsWith(k, p) && absl::SimpleAtoi(k.substr(strlen(p), k.find('.') - strlen(p)), &n)) up = std::max(up, n);
    }
  }
  const int max_up = 3 * up;
  static const std::regex kRdb(R"(^(?:body|RRDB_trunk)\.(\d+)\.(?:rdb|RDB)(\d)\.conv(\d)\.(weight|bias)$)");
  std::map<std::string, at::Tensor> out;
  for (const auto& [k, v] : t) {
    std::smatch m;
    const std::string param = k.substr(k.rfind('.') + 1);
    const std::string module = k.substr(0, k.rfind('.'));
    std::string name;
    if (std::regex_match(k, m, kRdb)) {
      name = absl::StrCat("model.1.sub.", m[1].str(), ".RDB", m[2].str(), ".conv", m[3].str(), ".0.", m[4].str());
    } else if (module == "conv_first") {
      name = "model.0." + param;
    } else if (module == "conv_body" || module == "trunk_conv") {
      name = absl::StrCat("model.1.sub.", nb, ".", param);
    } else if (absl::StartsWith(module, "conv_up") || absl::StartsWith(module, "upconv")) {
      int n = 0;
      (void)absl::SimpleAtoi(module.substr(absl::StartsWith(module, "conv_up") ? 7 : 6), &n);
      name = absl::StrCat("model.", 3 * n, ".", param);
    } else if (module == "conv_hr" || module == "HRconv") {
      name = absl::StrCat("model.", max_up + 2, ".", param);
    } else if (module == "conv_last") {
      name = absl::StrCat("model.", max_up + 4, ".", param);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected key ", k));
    }
    out[name] = v;
  }
  return out;
}

at::Tensor Lrelu(const at::Tensor& x) { return at::leaky_relu(x, 0.2); }

}  // namespace

absl::StatusOr<std::unique_ptr<EsrganNet>> EsrganNet::FromTensors(std::map<std::string, at::Tensor> tensors,
                                                                  const std::string& label) {
  auto net = std::unique_ptr<EsrganNet>(new EsrganNet());
  try {
    tensors = Unwrap(std::move(tensors));
    for (auto& [k, v] : tensors) v = v.to(at::kFloat).contiguous();
    const auto need = [&](const std::map<std::string, at::Tensor>& t, const std::string& name,
                          std::vector<int64_t> shape) -> absl::Status {
      const auto it = t.find(name);
      if (it == t.end()) return absl::InvalidArgumentError(absl::StrCat("'", label, "' lacks ", name));
      if (it->second.sizes() != at::IntArrayRef(shape)) {
        return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", name, " is ", ShapeText(it->second.sizes()),
                                                       ", expected ", ShapeText(shape)));
      }
      return absl::OkStatus();
    };
    if (tensors.count("body.0.weight") && tensors.count("body.1.weight")) {
      // SRVGGNetCompact: body.{even} convs, body.{odd} PReLU slopes, body.{highest} the last conv.
      net->arch_ = Arch::kCompact;
      const int highest = MaxIndex(tensors, "body.");
      const at::Tensor& first = tensors.at("body.0.weight");
      if (first.dim() != 4 || highest < 2 || highest % 2 != 0) {
        return absl::InvalidArgumentError(absl::StrCat("'", label, "' is not an SRVGGNetCompact (body.0 / last index)"));
      }
      const int64_t nf = first.size(0), in_nc = first.size(1);
      const auto last_bias = tensors.find(absl::StrCat("body.", highest, ".bias"));
      if (last_bias == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("'", label, "' lacks body.", highest, ".bias"));
      const int64_t x = last_bias->second.size(0);
      int64_t out_nc = 0;
      for (int64_t c : {in_nc, int64_t{3}, int64_t{4}, int64_t{1}}) {
        if (x % c != 0) continue;
        const auto s = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(x / c))));
        if (s * s == x / c) {
          out_nc = c;
          net->scale_ = static_cast<int>(s);
          break;
        }
      }
      if (out_nc == 0) return absl::InvalidArgumentError(absl::StrCat("'", label, "': the last conv's ", x, " outputs are no c·s²"));
      for (int i = 0; i <= highest; ++i) {
        absl::Status s;
        if (i % 2 == 1) {
          s = need(tensors, absl::StrCat("body.", i, ".weight"), {nf});
        } else {
          const int64_t in = i == 0 ? in_nc : nf, out = i == highest ? x : nf;
          s = need(tensors, absl::StrCat("body.", i, ".weight"), {out, in, 3, 3});
          if (s.ok()) s = need(tensors, absl::StrCat("body.", i, ".bias"), {out});
        }
        if (!s.ok()) return s;
      }
      net->last_ = highest;
      net->w_ = std::move(tensors);
      net->description_ = absl::StrCat("Real-ESRGAN compact (SRVGGNet, ", (highest - 2) / 2, " convs, ", nf,
                                       " features), ", net->scale_, "x");
      return net;
    }
    const bool old_layout = tensors.count("model.0.weight") && tensors.count("model.1.sub.0.RDB1.conv1.0.weight");
    const bool basicsr = tensors.count("conv_first.weight") && tensors.count("body.0.rdb1.conv1.weight") &&
                         tensors.count("conv_body.weight") && tensors.count("conv_last.weight");
    const bool bsrgan = tensors.count("conv_first.weight") && tensors.count("RRDB_trunk.0.RDB1.conv1.weight") &&
                        tensors.count("trunk_conv.weight") && tensors.count("conv_last.weight");
    for (const auto& [k, v] : tensors) {
      if (absl::StrContains(k, ".conv1x1.")) {
        return absl::InvalidArgumentError(absl::StrCat("'", label, "' is an ESRGAN+ net (", k, "): not supported; "
                                                       "ESRGAN / Real-ESRGAN RRDBNet and SRVGGNetCompact are"));
      }
    }
    if (!old_layout && !basicsr && !bsrgan) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", label, "' is not an ESRGAN-family upscaler: expected RRDBNet (ESRGAN, Real-ESRGAN x4plus / anime_6B / "
          "x2plus) or SRVGGNetCompact (realesr-animevideov3, realesr-general-x4v3) keys"));
    }
    auto old = ToOldLayout(tensors);
    if (!old.ok()) return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", old.status().message()));
    const int seq_len = MaxIndex(*old, "model.") + 1;
    if (seq_len < 5 || (seq_len - 5) % 3 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", seq_len, " top-level layers do not make an RRDBNet"));
    }
    net->up_convs_ = (seq_len - 5) / 3;
    net->blocks_ = MaxIndex(*old, "model.1.sub.");  // the last sub is conv_body
    const at::Tensor& first = old->at("model.0.weight");
    const int64_t nf = first.size(0), in_nc = first.size(1);
    const auto last = old->find(absl::StrCat("model.", seq_len - 1, ".weight"));
    if (last == old->end()) return absl::InvalidArgumentError(absl::StrCat("'", label, "' lacks its last conv"));
    const int64_t out_nc = last->second.size(0);
    const int64_t gc = old->count("model.1.sub.0.RDB1.conv1.0.weight") ? old->at("model.1.sub.0.RDB1.conv1.0.weight").size(0) : 32;
    int scale = 1 << net->up_convs_;
    if (in_nc == 4 * out_nc || in_nc == 16 * out_nc) {
      net->shuffle_ = in_nc == 4 * out_nc ? 2 : 4;
      scale /= net->shuffle_;
    } else if (in_nc != out_nc) {
      return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", in_nc, " input and ", out_nc, " output channels"));
    }
    if (scale < 1) return absl::InvalidArgumentError(absl::StrCat("'", label, "': a scale below 1"));
    net->scale_ = scale;
    // Every weight the forward pass reads, with its shape.
    std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {{"model.0", {nf, in_nc, 3, 3}}};
    for (int n = 0; n < net->blocks_; ++n) {
      for (int r = 1; r <= 3; ++r) {
        for (int c = 1; c <= 5; ++c) {
          expected.push_back({absl::StrCat("model.1.sub.", n, ".RDB", r, ".conv", c, ".0"),
                              {c == 5 ? nf : gc, nf + (c - 1) * gc, 3, 3}});
        }
      }
    }
    expected.push_back({absl::StrCat("model.1.sub.", net->blocks_), {nf, nf, 3, 3}});
    for (int k = 1; k <= net->up_convs_; ++k) expected.push_back({absl::StrCat("model.", 3 * k), {nf, nf, 3, 3}});
    expected.push_back({absl::StrCat("model.", 3 * net->up_convs_ + 2), {nf, nf, 3, 3}});
    expected.push_back({absl::StrCat("model.", 3 * net->up_convs_ + 4), {out_nc, nf, 3, 3}});
    std::set<std::string> used;
    for (const auto& [name, shape] : expected) {
      const int64_t out = shape[0];
      if (absl::Status s = need(*old, name + ".weight", shape); !s.ok()) return s;
      if (absl::Status s = need(*old, name + ".bias", {out}); !s.ok()) return s;
      used.insert(name + ".weight");
      used.insert(name + ".bias");
    }
    for (const auto& [k, v] : *old) {
      if (!used.count(k)) return absl::InvalidArgumentError(absl::StrCat("'", label, "' has an unexpected tensor ", k));
    }
    net->w_ = *std::move(old);
    net->description_ = absl::StrCat("ESRGAN (RRDBNet, ", net->blocks_, " blocks, ", nf, " features), ", scale, "x");
    return net;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", e.what()));
  }
}

absl::StatusOr<std::string> DescribeUpscalerFile(const std::filesystem::path& path) {
  auto index = ReadTensorIndex(path);
  if (!index.ok()) return index.status();
  std::map<std::string, at::Tensor> shapes;
  for (const TensorInfo& t : index->tensors) shapes[t.name] = at::empty(t.shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  auto net = EsrganNet::FromTensors(std::move(shapes), path.filename().string());
  if (!net.ok()) return net.status();
  return (*net)->description();
}

void EsrganNet::To(const at::Device& device) {
  for (auto& [k, v] : w_) v = v.to(device);
}

at::Tensor EsrganNet::Forward(const at::Tensor& input) const {
  const at::Tensor x = input.contiguous();
  const at::Tensor y = arch_ == Arch::kCompact ? CompactForward(x) : RrdbForward(x);
  return y.clamp(0, 1);
}

at::Tensor EsrganNet::RrdbForward(const at::Tensor& input) const {
  const auto conv = [this](const at::Tensor& t, const std::string& name) {
    return at::conv2d(t, W(name + ".weight"), W(name + ".bias"), 1, 1);
  };
  const int64_t h = input.size(2), w = input.size(3);
  at::Tensor x = input;
  if (shuffle_ > 1) {
    // spandrel's descriptor: reflect-pad right / bottom to a multiple of 4, unshuffle, crop the output.
    const int64_t ph = (4 - h % 4) % 4, pw = (4 - w % 4) % 4;
    if (ph > 0 || pw > 0) x = at::reflection_pad2d(x, {0, pw, 0, ph});
    x = at::pixel_unshuffle(x, shuffle_);
  }
  const at::Tensor fea = conv(x, "model.0");
  // One buffer per dense block holds x, x1..x4 side by side: each conv reads a channel prefix of it (a contiguous
  // view for one image) and its output is written after that prefix, instead of concatenating anew for every conv.
  const int64_t nf = fea.size(1), gc = W("model.1.sub.0.RDB1.conv1.0.weight").size(0);
  at::Tensor dense = at::empty({fea.size(0), nf + 4 * gc, fea.size(2), fea.size(3)}, fea.options());
  at::Tensor t = fea;
  for (int n = 0; n < blocks_; ++n) {
    const at::Tensor block_in = t;
    for (int r = 1; r <= 3; ++r) {
      const std::string p = absl::StrCat("model.1.sub.", n, ".RDB", r, ".conv");
      dense.narrow(1, 0, nf).copy_(t);
      for (int c = 1; c <= 4; ++c) {
        const at::Tensor y = conv(dense.narrow(1, 0, nf + (c - 1) * gc), absl::StrCat(p, c, ".0"));
        at::leaky_relu_(dense.narrow(1, nf + (c - 1) * gc, gc).copy_(y), 0.2);
      }
      t = conv(dense, p + "5.0").mul_(0.2).add_(t);
    }
    t = t.mul_(0.2).add_(block_in);
  }
  at::Tensor out = fea + conv(t, absl::StrCat("model.1.sub.", blocks_));
  for (int k = 1; k <= up_convs_; ++k) {
    out = Lrelu(conv(at::upsample_nearest2d(out, {out.size(2) * 2, out.size(3) * 2}), absl::StrCat("model.", 3 * k)));
  }
  out = conv(Lrelu(conv(out, absl::StrCat("model.", 3 * up_convs_ + 2))), absl::StrCat("model.", 3 * up_convs_ + 4));
  if (shuffle_ > 1) out = out.slice(2, 0, h * scale_).slice(3, 0, w * scale_);
  return out;
}

at::Tensor EsrganNet::CompactForward(const at::Tensor& x) const {
  at::Tensor t = x;
  for (int i = 0; i <= last_; i += 2) {
    t = at::conv2d(t, W(absl::StrCat("body.", i, ".weight")), W(absl::StrCat("body.", i, ".bias")), 1, 1);
    if (i < last_) t = at::prelu(t, W(absl::StrCat("body.", i + 1, ".weight")));
  }
  const at::Tensor base = at::upsample_nearest2d(x, {x.size(2) * scale_, x.size(3) * scale_});
  return at::pixel_shuffle(t, scale_) + base;
}

}  // namespace atelier::engine
