#include "freeinit.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace atelier::animatediff {
namespace {

// Python's round(): half to even.
int64_t PyRound(double v) { return static_cast<int64_t>(std::nearbyint(v)); }

// Python slice bounds [start, stop) of a sequence of `n`, for integer start and stop.
std::pair<int64_t, int64_t> PySlice(int64_t start, int64_t stop, int64_t n) {
  const auto fix = [n](int64_t i) { return i < 0 ? std::max<int64_t>(i + n, 0) : std::min(i, n); };
  const int64_t s = fix(start), e = fix(stop);
  return {s, std::max(s, e)};
}

}  // namespace

absl::StatusOr<at::Tensor> FreeInitFilter(const std::string& method, int frames, int height, int width, double d_s,
                                          double d_t) {
  if (method != "butterworth" && method != "gaussian" && method != "ideal" && method != "box") {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff freeinit_filter '", method.substr(0, 32),
                                                   "' is not one of butterworth, gaussian, box, ideal"));
  }
  at::Tensor mask = at::zeros({frames, height, width}, at::kFloat);
  if (d_s == 0 || d_t == 0) return mask;
  float* m = mask.data_ptr<float>();
  if (method == "box") {
    const int64_t ts = PyRound(static_cast<double>(height / 2) * d_s);
    const int64_t tt = PyRound(static_cast<double>(frames / 2) * d_t);
    const int64_t cf = frames / 2, cr = height / 2, cc = width / 2;
    const auto [f0, f1] = PySlice(cf - tt, cf + tt, frames);
    const auto [r0, r1] = PySlice(cr - ts, cr + ts, height);
    const auto [c0, c1] = PySlice(cc - ts, cc + ts, width);
    if (f1 > f0 && r1 > r0 && c1 > c0) mask.slice(0, f0, f1).slice(1, r0, r1).slice(2, c0, c1).fill_(1.0);
    return mask;
  }
  for (int t = 0; t < frames; ++t) {
    for (int h = 0; h < height; ++h) {
      for (int w = 0; w < width; ++w) {
        const double ft = (d_s / d_t) * (2.0 * t / frames - 1), fh = 2.0 * h / height - 1, fw = 2.0 * w / width - 1;
        const double d2 = ft * ft + fh * fh + fw * fw;
        double v = 0;
        if (method == "gaussian") {
          v = std::exp(-1 / (2 * d_s * d_s) * d2);
        } else if (method == "butterworth") {
          v = 1 / (1 + std::pow(d2 / (d_s * d_s), 4));
        } else {
          v = d2 <= d_s * 2 ? 1 : 0;
        }
        m[(static_cast<int64_t>(t) * height + h) * width + w] = static_cast<float>(v);
      }
    }
  }
  return mask;
}

at::Tensor DiffuseToEnd(const at::Tensor& latent, const at::Tensor& noise, const at::Tensor& alphas_cumprod) {
  const at::Tensor a = alphas_cumprod.to(latent.device(), latent.scalar_type())[alphas_cumprod.size(0) - 1];
  return a.sqrt() * latent + (1 - a).sqrt() * noise.to(latent.device(), latent.scalar_type());
}

at::Tensor FreqMix3d(const at::Tensor& x, const at::Tensor& noise, const at::Tensor& low_pass) {
  // [frames, C, h, w] -> [C, frames, h, w]: the transforms run over the last three dimensions.
  const std::vector<int64_t> dims = {-3, -2, -1};
  const at::Tensor xf = x.to(at::kFloat).permute({1, 0, 2, 3});
  const at::Tensor nf = noise.to(x.device(), at::kFloat).permute({1, 0, 2, 3});
  const at::Tensor lpf = low_pass.to(x.device());
  const at::Tensor x_freq = at::fft_fftshift(at::fft_fftn(xf, c10::nullopt, dims), dims);
  const at::Tensor n_freq = at::fft_fftshift(at::fft_fftn(nf, c10::nullopt, dims), dims);
  const at::Tensor mixed = x_freq * lpf + n_freq * (1 - lpf);
  const at::Tensor out = at::real(at::fft_ifftn(at::fft_ifftshift(mixed, dims), c10::nullopt, dims));
  return out.permute({1, 0, 2, 3}).contiguous().to(x.scalar_type());
}

}  // namespace atelier::animatediff
