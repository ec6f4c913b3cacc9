#include "rife_model.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace atelier::rife {
namespace {

std::string ShapeText(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

at::Tensor Resize(const at::Tensor& x, double factor) {
  // F.interpolate(scale_factor=f, mode="bilinear", align_corners=False): size floor(in * f), coordinates by f.
  if (factor == 1.0) return x;
  const int64_t h = static_cast<int64_t>(std::floor(x.size(2) * factor));
  const int64_t w = static_cast<int64_t>(std::floor(x.size(3) * factor));
  return at::upsample_bilinear2d(x, {h, w}, false, factor, factor);
}

at::Tensor LeakyRelu(const at::Tensor& x) { return at::leaky_relu(x, 0.2); }

// ConvTranspose2d(k 4, stride 2, padding 1). libtorch 1.13's oneDNN path mis-shapes it for bfloat16 inputs, so
// reduced precision runs this one layer in float32.
at::Tensor UpConv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  static constexpr std::array<int64_t, 2> kStride = {2, 2}, kPad = {1, 1};
  const at::IntArrayRef stride(kStride), pad(kPad);
  if (x.scalar_type() == at::kBFloat16) {
    return at::conv_transpose2d(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat), stride, pad).to(x.scalar_type());
  }
  return at::conv_transpose2d(x, w, b, stride, pad);
}

at::Tensor Conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t stride, int64_t pad) {
  return at::conv2d(x, w, b, at::IntArrayRef({stride, stride}), at::IntArrayRef({pad, pad}));
}

}  // namespace

at::Tensor Warp(const at::Tensor& image_in, const at::Tensor& flow_in) {
  // Sampled in float32 whatever the net computes in (as vs-rife's warp does for half precision).
  const at::Tensor image = image_in.to(at::kFloat), flow = flow_in.to(at::kFloat);
  const int64_t n = flow.size(0), h = flow.size(2), w = flow.size(3);
  const auto opts = flow.options();
  const at::Tensor hor = at::linspace(-1.0, 1.0, w, opts).view({1, 1, 1, w}).expand({n, -1, h, -1});
  const at::Tensor ver = at::linspace(-1.0, 1.0, h, opts).view({1, 1, h, 1}).expand({n, -1, -1, w});
  const at::Tensor grid = at::cat({hor, ver}, 1);
  const at::Tensor f = at::cat({flow.narrow(1, 0, 1) / ((image.size(3) - 1.0) / 2.0),
                                flow.narrow(1, 1, 1) / ((image.size(2) - 1.0) / 2.0)},
                               1);
  return at::grid_sampler(image, (grid + f).permute({0, 2, 3, 1}), /*bilinear*/ 0, /*border*/ 1, /*align_corners*/ true)
      .to(image_in.scalar_type());
}

double ThumbnailSsim(const at::Tensor& img0, const at::Tensor& img1) {
  auto thumb = [](const at::Tensor& x) {
    return at::upsample_bilinear2d(x.to(at::kDouble).narrow(1, 0, 3), {32, 32}, false);
  };
  const at::Tensor a = thumb(img0), b = thumb(img1);
  // 11x11 Gaussian window (sigma 1.5), per channel, valid region; C1 = (0.01)^2, C2 = (0.03)^2 for data in [0, 1].
  at::Tensor g = at::exp(-at::pow(at::arange(11, at::kDouble) - 5, 2) / (2 * 1.5 * 1.5));
  g = g / g.sum();
  const at::Tensor window = (g.view({11, 1}) * g.view({1, 11})).view({1, 1, 11, 11}).expand({3, 1, 11, 11}).contiguous();
  auto filter = [&](const at::Tensor& x) {
    return at::conv2d(x, window, at::Tensor(), at::IntArrayRef({1, 1}), at::IntArrayRef({0, 0}), at::IntArrayRef({1, 1}), 3);
  };
  const at::Tensor mu_a = filter(a), mu_b = filter(b);
  const at::Tensor saa = filter(a * a) - mu_a * mu_a, sbb = filter(b * b) - mu_b * mu_b, sab = filter(a * b) - mu_a * mu_b;
  constexpr double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  const at::Tensor map = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2));
  return map.mean().item<double>();
}

absl::StatusOr<std::unique_ptr<RifeModel>> RifeModel::Create(const WeightMap& raw, const std::string& label,
                                                             at::Device device, at::ScalarType dtype) {
  WeightMap w;
  const bool prefixed = std::any_of(raw.begin(), raw.end(), [](const auto& kv) { return absl::StartsWith(kv.first, "module."); });
  for (const auto& [name, t] : raw) {
    if (prefixed) {
      if (absl::StartsWith(name, "module.")) w.emplace(name.substr(7), t);  // Practical-RIFE keeps only module.*
    } else {
      w.emplace(name, t);
    }
  }
  std::unique_ptr<RifeModel> m(new RifeModel());
  m->device_ = device;
  m->dtype_ = dtype;
  if (w.count("block0.conv0.0.0.weight") == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' is not a RIFE IFNet (no block0.conv0.0.0.weight)"));
  }
  m->arch_ = w.count("encode.cnn0.weight") != 0 ? Architecture::kV425 : Architecture::kV46;
  const int blocks = m->arch_ == Architecture::kV46 ? 4 : 5;
  const int64_t out = m->arch_ == Architecture::kV46 ? 6 : 13;
  const int64_t in0 = m->arch_ == Architecture::kV46 ? 7 : 15;
  const int64_t in_rest = (m->arch_ == Architecture::kV46 ? 8 : 24) + 4;
  std::vector<std::string> problems;
  auto take = [&](const std::string& name, std::vector<int64_t> shape) -> at::Tensor {
    auto it = w.find(name);
    if (it == w.end()) {
      problems.push_back(absl::StrCat(name, " is missing"));
      return at::Tensor();
    }
    if (std::vector<int64_t>(it->second.sizes().begin(), it->second.sizes().end()) != shape || !it->second.is_floating_point()) {
      at::Tensor want = at::empty(shape, at::TensorOptions().device(at::kMeta));
      problems.push_back(absl::StrCat(name, " is ", ShapeText(it->second), ", expected ", ShapeText(want)));
      return at::Tensor();
    }
    return it->second.to(device, dtype);
  };
  auto conv = [&](const std::string& name, int64_t o, int64_t i, int64_t k) {
    return Conv{take(name + ".weight", {o, i, k, k}), take(name + ".bias", {o})};
  };
  for (int b = 0; b < blocks; ++b) {
    const std::string p = absl::StrCat("block", b, ".");
    auto it = w.find(p + "conv0.1.0.weight");
    if (it == w.end() || it->second.dim() != 4) {
      problems.push_back(p + "conv0.1.0.weight is missing");
      continue;
    }
    const int64_t c = it->second.size(0);
    m->widths_.push_back(c);
    Block blk;
    blk.conv0a = conv(p + "conv0.0.0", c / 2, b == 0 ? in0 : in_rest, 3);
    blk.conv0b = conv(p + "conv0.1.0", c, c / 2, 3);
    for (int r = 0; r < 8; ++r) {
      const std::string q = absl::StrCat(p, "convblock.", r, ".");
      blk.res.emplace_back(conv(q + "conv", c, c, 3), take(q + "beta", {1, c, 1, 1}));
    }
    // ConvTranspose2d weights are [in, out, k, k].
    blk.last = Conv{take(p + "lastconv.0.weight", {c, 4 * out, 4, 4}), take(p + "lastconv.0.bias", {4 * out})};
    m->blocks_.push_back(std::move(blk));
  }
  if (m->arch_ == Architecture::kV425) {
    m->head_[0] = conv("encode.cnn0", 16, 3, 3);
    m->head_[1] = conv("encode.cnn1", 16, 16, 3);
    m->head_[2] = conv("encode.cnn2", 16, 16, 3);
    m->head_[3] = Conv{take("encode.cnn3.weight", {16, 4, 4, 4}), take("encode.cnn3.bias", {4})};
  }
  if (w.count(absl::StrCat("block", blocks, ".conv0.0.0.weight")) != 0) {
    problems.push_back(absl::StrCat("block", blocks, " is more than RIFE ", m->version(), " has"));
  }
  if (!problems.empty()) {
    const size_t shown = std::min<size_t>(problems.size(), 4);
    std::string text;
    for (size_t i = 0; i < shown; ++i) text += (i ? "; " : "") + problems[i];
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' does not match the RIFE ", m->version(),
                                                   " architecture: ", text,
                                                   problems.size() > shown ? absl::StrCat(" (and ", problems.size() - shown, " more)") : ""));
  }
  return m;
}

at::Tensor RifeModel::RunBlock(const Block& b, const at::Tensor& input, const at::Tensor& flow, double s) const {
  at::Tensor x = Resize(input, 1.0 / s);
  if (flow.defined()) x = at::cat({x, Resize(flow, 1.0 / s) * (1.0 / s)}, 1);
  at::Tensor feat = LeakyRelu(Conv2d(x, b.conv0a.weight, b.conv0a.bias, 2, 1));
  feat = LeakyRelu(Conv2d(feat, b.conv0b.weight, b.conv0b.bias, 2, 1));
  for (const auto& [c, beta] : b.res) feat = LeakyRelu(Conv2d(feat, c.weight, c.bias, 1, 1) * beta + feat);
  at::Tensor tmp = at::pixel_shuffle(UpConv(feat, b.last.weight, b.last.bias), 2);
  return Resize(tmp, s);
}

int64_t RifeModel::PadMultiple(double scale) { return std::max<int64_t>(128, static_cast<int64_t>(128 / scale)); }

absl::StatusOr<at::Tensor> RifeModel::Interpolate(const at::Tensor& img0_in, const at::Tensor& img1_in, double t,
                                                  double scale, RifeTrace* trace) const {
  try {
    return InterpolateOrThrow(img0_in, img1_in, t, scale, trace);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("RIFE failed: ", std::string(e.what()).substr(0, 300)));
  }
}

absl::StatusOr<at::Tensor> RifeModel::InterpolateOrThrow(const at::Tensor& img0_in, const at::Tensor& img1_in,
                                                         double t, double scale, RifeTrace* trace) const {
  if (img0_in.dim() != 4 || img0_in.size(1) != 3 || img0_in.sizes() != img1_in.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("RIFE needs two frames [n, 3, H, W] of one size, got ",
                                                   ShapeText(img0_in), " and ", ShapeText(img1_in)));
  }
  if (!(t > 0 && t < 1)) return absl::InvalidArgumentError(absl::StrCat("RIFE timestep ", t, " is outside (0, 1)"));
  const std::vector<double> allowed = {0.25, 0.5, 1.0, 2.0, 4.0};
  if (std::find(allowed.begin(), allowed.end(), scale) == allowed.end()) {
    return absl::InvalidArgumentError(absl::StrCat("RIFE scale ", scale, " is not one of 0.25, 0.5, 1, 2, 4"));
  }
  const int64_t multiple = static_cast<int64_t>(std::llround((arch_ == Architecture::kV46 ? 32.0 : 64.0) / scale));
  if (img0_in.size(2) % std::max<int64_t>(multiple, 1) != 0 || img0_in.size(3) % std::max<int64_t>(multiple, 1) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RIFE ", version(), " at scale ", scale, " needs sizes that are multiples of ",
                                                   multiple, ", got ", img0_in.size(3), "x", img0_in.size(2)));
  }
  const at::Tensor img0 = img0_in.to(device_, dtype_), img1 = img1_in.to(device_, dtype_);
  const at::Tensor tmap = at::full({img0.size(0), 1, img0.size(2), img0.size(3)}, t, img0.options());
  const int nblocks = static_cast<int>(blocks_.size());
  std::vector<double> scales;
  for (int i = 0; i < nblocks; ++i) scales.push_back(std::pow(2.0, nblocks - 1 - i) / scale);
  at::Tensor flow, mask, feat, f0, f1;
  at::Tensor warped0 = img0, warped1 = img1;
  if (arch_ == Architecture::kV425) {
    auto head = [&](const at::Tensor& x) {
      at::Tensor y = LeakyRelu(Conv2d(x, head_[0].weight, head_[0].bias, 2, 1));
      y = LeakyRelu(Conv2d(y, head_[1].weight, head_[1].bias, 1, 1));
      y = LeakyRelu(Conv2d(y, head_[2].weight, head_[2].bias, 1, 1));
      return UpConv(y, head_[3].weight, head_[3].bias);
    };
    f0 = head(img0);
    f1 = head(img1);
    if (trace) trace->head0 = f0.to(at::kFloat);
  }
  for (int i = 0; i < nblocks; ++i) {
    const double s = scales[static_cast<size_t>(i)];
    at::Tensor input;
    if (!flow.defined()) {
      input = arch_ == Architecture::kV46 ? at::cat({img0, img1, tmap}, 1) : at::cat({img0, img1, f0, f1, tmap}, 1);
    } else if (arch_ == Architecture::kV46) {
      input = at::cat({warped0, warped1, tmap, mask}, 1);
    } else {
      input = at::cat({warped0, warped1, Warp(f0, flow.narrow(1, 0, 2)), Warp(f1, flow.narrow(1, 2, 2)), tmap, mask, feat}, 1);
    }
    const at::Tensor tmp = RunBlock(blocks_[static_cast<size_t>(i)], input, flow, s);
    const at::Tensor df = tmp.narrow(1, 0, 4) * s, dm = tmp.narrow(1, 4, 1);
    if (arch_ == Architecture::kV425) feat = tmp.narrow(1, 5, 8);
    if (trace) {
      trace->block_flow.push_back(df.to(at::kFloat));
      trace->block_mask.push_back(dm.to(at::kFloat));
    }
    if (!flow.defined()) {
      flow = df;
      mask = dm;
    } else {
      flow = flow + df;
      mask = arch_ == Architecture::kV46 ? mask + dm : dm;  // 4.6 accumulates the mask, 4.2x replaces it
    }
    warped0 = Warp(img0, flow.narrow(1, 0, 2));
    warped1 = Warp(img1, flow.narrow(1, 2, 2));
  }
  const at::Tensor m = at::sigmoid(mask);
  return (warped0 * m + warped1 * (1 - m)).to(at::kFloat);
}

absl::StatusOr<at::Tensor> RifeModel::InterpolatePadded(const at::Tensor& img0, const at::Tensor& img1, double t,
                                                        double scale) const {
  const int64_t mult = PadMultiple(scale);
  const int64_t h = img0.size(2), w = img0.size(3);
  const int64_t ph = (h + mult - 1) / mult * mult, pw = (w + mult - 1) / mult * mult;
  auto pad = [&](const at::Tensor& x) { return at::constant_pad_nd(x, {0, pw - w, 0, ph - h}, 0); };
  auto out = Interpolate(pad(img0), pad(img1), t, scale);
  if (!out.ok()) return out.status();
  return out->narrow(2, 0, h).narrow(3, 0, w).contiguous();
}

}  // namespace atelier::rife
