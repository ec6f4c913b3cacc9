#include "control_weights.h"

#include <cmath>

#include <ATen/ATen.h>

namespace atelier::controlnet {

std::array<double, kResiduals> ControlScales(double weight, bool soft, const std::vector<double>& advanced) {
  std::array<double, kResiduals> s{};
  for (int i = 0; i < kResiduals; ++i) {
    if (advanced.size() == static_cast<size_t>(kResiduals)) {
      s[i] = advanced[i];
    } else {
      s[i] = soft ? weight * std::pow(0.825, static_cast<double>(kResiduals - 1 - i)) : weight;
    }
  }
  return s;
}

bool GuidanceActive(int sampling_step, int total_sampling_steps, double start, double end) {
  const double percent = total_sampling_steps > 0 ? static_cast<double>(sampling_step) / total_sampling_steps : 0.0;
  return !(percent < start || percent > end);
}

void AccumulateResiduals(Residuals& sum, const Residuals& raw, const std::array<double, kResiduals>& scales,
                         bool cond_rows_only, int64_t cond_rows, int64_t rows) {
  for (int i = 0; i < kResiduals; ++i) {
    if (!raw[i].defined()) continue;
    at::Tensor r = raw[i] * scales[i];
    if (cond_rows_only && r.size(0) != rows) {
      // Conditional rows only were computed: the unconditional ones add nothing.
      std::vector<int64_t> shape(r.sizes().begin(), r.sizes().end());
      shape[0] = rows - r.size(0);
      r = at::cat({r, at::zeros(shape, r.options())}, 0);
    } else if (cond_rows_only) {
      r = at::cat({r.narrow(0, 0, cond_rows), at::zeros_like(r.narrow(0, cond_rows, rows - cond_rows))}, 0);
    }
    sum[i] = sum[i].defined() ? sum[i] + r : r;
  }
}

}  // namespace atelier::controlnet
