#include "i2v_latent.h"

#include <cmath>

#include <ATen/ATen.h>

namespace atelier::animatediff {
namespace {

at::Tensor Alphas(int frames, double power, double scale, bool reverse) {
  std::vector<float> a(static_cast<size_t>(frames));
  for (int i = 0; i < frames; ++i) a[static_cast<size_t>(reverse ? frames - 1 - i : i)] =
      static_cast<float>(1 - std::pow(static_cast<double>(i), power) / scale);
  at::Tensor t = at::tensor(a, at::kFloat).view({frames, 1, 1, 1});
  return t.clamp_min(0);  // alpha[alpha < 0] = 0
}

}  // namespace

I2vAlphas I2vLatentAlphas(int frames, double power, double scale, bool with_last, double power_last,
                          double scale_last) {
  I2vAlphas out;
  out.init = Alphas(frames, power, scale, false);
  if (!with_last) return out;
  out.last = Alphas(frames, power_last, scale_last, true);
  const at::Tensor sum = out.init + out.last;
  const at::Tensor over = sum > 1;
  const at::Tensor factor = at::where(over, 1 / sum, at::ones_like(sum));
  out.init = out.init * factor;
  out.last = out.last * factor;
  out.init[0] = 1;
  out.init[frames - 1] = 0;
  out.last[0] = 0;
  out.last[frames - 1] = 1;
  return out;
}

at::Tensor MixI2vLatent(const I2vAlphas& alphas, const at::Tensor& init, const at::Tensor& last,
                        const at::Tensor& noise) {
  const at::Tensor a = alphas.init.to(init.device(), init.scalar_type());
  if (!alphas.last.defined()) return init * a + noise * (1 - a);
  const at::Tensor b = alphas.last.to(init.device(), init.scalar_type());
  return init * a + last.to(init.device(), init.scalar_type()) * b + noise * (1 - a - b);
}

}  // namespace atelier::animatediff
