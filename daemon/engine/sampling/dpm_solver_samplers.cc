// k-diffusion's DPMSolver (DPM fast, DPM adaptive): integrates in t = -log(sigma) between the model's sigma_max
// and sigma_min with the eps parameterisation, ignoring the schedule.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include <ATen/ATen.h>

#include "engine/sampling/sampler_kernels.h"

namespace atelier::engine {
namespace {

double SigmaOf(double t) { return std::exp(-t); }
double TOf(double sigma) { return -std::log(sigma); }

class DpmSolver {
 public:
  explicit DpmSolver(KernelContext& c) : c_(c) {}

  using Cache = std::map<std::string, at::Tensor>;

  // eps at (x, t), cached per step under `key`.
  const at::Tensor& Eps(Cache& cache, const std::string& key, const at::Tensor& x, double t) {
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    const double sigma = SigmaOf(t);
    return cache[key] = (x - c_.model.Denoise(x, sigma)) / sigma;
  }

  at::Tensor Step1(const at::Tensor& x, double t, double t_next, Cache& cache) {
    const double h = t_next - t;
    return x - Eps(cache, "eps", x, t) * (SigmaOf(t_next) * std::expm1(h));
  }

  at::Tensor Step2(const at::Tensor& x, double t, double t_next, double r1, Cache& cache) {
    const double h = t_next - t;
    const at::Tensor eps = Eps(cache, "eps", x, t);
    const double s1 = t + r1 * h;
    const at::Tensor u1 = x - eps * (SigmaOf(s1) * std::expm1(r1 * h));
    const at::Tensor eps_r1 = Eps(cache, "eps_r1", u1, s1);
    return x - eps * (SigmaOf(t_next) * std::expm1(h)) -
           (eps_r1 - eps) * (SigmaOf(t_next) / (2 * r1) * std::expm1(h));
  }

  at::Tensor Step3(const at::Tensor& x, double t, double t_next, Cache& cache) {
    constexpr double r1 = 1.0 / 3, r2 = 2.0 / 3;
    const double h = t_next - t;
    const at::Tensor eps = Eps(cache, "eps", x, t);
    const double s1 = t + r1 * h, s2 = t + r2 * h;
    const at::Tensor u1 = x - eps * (SigmaOf(s1) * std::expm1(r1 * h));
    const at::Tensor eps_r1 = Eps(cache, "eps_r1", u1, s1);
    const at::Tensor u2 = x - eps * (SigmaOf(s2) * std::expm1(r2 * h)) -
                          (eps_r1 - eps) * (SigmaOf(s2) * (r2 / r1) * (std::expm1(r2 * h) / (r2 * h) - 1));
    const at::Tensor eps_r2 = Eps(cache, "eps_r2", u2, s2);
    return x - eps * (SigmaOf(t_next) * std::expm1(h)) -
           (eps_r2 - eps) * (SigmaOf(t_next) / r2 * (std::expm1(h) / h - 1));
  }

  // The ancestral split of a step from t to t_next: the deterministic target t_next_ and the noise scale.
  std::pair<double, double> Ancestral(double t, double t_next, double t_end) const {
    const double eta = c_.params.eta;
    if (eta == 0) return {t_next, 0.0};
    const double from = SigmaOf(t), to = SigmaOf(t_next);
    const double up = std::min(to, eta * std::sqrt(to * to * (from * from - to * to) / (from * from)));
    const double down = std::sqrt(to * to - up * up);
    const double t_next_ = std::min(t_end, TOf(down));
    const double s_next_ = SigmaOf(t_next_);
    return {t_next_, std::sqrt(std::max(0.0, to * to - s_next_ * s_next_))};
  }

  KernelContext& c_;
};

}  // namespace

at::Tensor SampleDpmFast(KernelContext& c, at::Tensor x, double sigma_min, double sigma_max, int nfe) {
  DpmSolver solver(c);
  const double t_start = TOf(static_cast<float>(sigma_max)), t_end = TOf(static_cast<float>(sigma_min));
  const int m = nfe / 3 + 1;
  std::vector<int> orders;
  if (nfe % 3 == 0) {
    orders.assign(std::max(0, m - 2), 3);
    orders.push_back(2);
    orders.push_back(1);
  } else {
    orders.assign(m - 1, 3);
    orders.push_back(nfe % 3);
  }
  const at::Tensor ts_tensor = at::linspace(t_start, t_end, m + 1, at::TensorOptions().dtype(at::kFloat));
  const float* ts = ts_tensor.data_ptr<float>();
  const int total = static_cast<int>(orders.size());
  for (int i = 0; i < total; ++i) {
    DpmSolver::Cache cache;
    const double t = ts[i], t_next = ts[i + 1];
    const auto [t_next_, su] = solver.Ancestral(t, t_next, t_end);
    const at::Tensor eps = solver.Eps(cache, "eps", x, t);
    const at::Tensor denoised = x - eps * SigmaOf(t);
    c.model.ReportStep(i, total, SigmaOf(t), x, denoised);
    if (orders[i] == 1) {
      x = solver.Step1(x, t, t_next_, cache);
    } else if (orders[i] == 2) {
      x = solver.Step2(x, t, t_next_, 0.5, cache);
    } else {
      x = solver.Step3(x, t, t_next_, cache);
    }
    x = x + c.noise(SigmaOf(t), SigmaOf(t_next)) * (su * c.params.s_noise);
  }
  return x;
}

at::Tensor SampleDpmAdaptive(KernelContext& c, at::Tensor x, double sigma_min, double sigma_max) {
  // k-diffusion defaults: order 3, rtol 0.05, atol 0.0078, h_init 0.05, PID (0, 1, 0), accept_safety 0.81.
  constexpr double kRtol = 0.05, kAtol = 0.0078, kHInit = 0.05, kAcceptSafety = 0.81, kEps = 1e-8;
  DpmSolver solver(c);
  const double t_start = TOf(static_cast<float>(sigma_max)), t_end = TOf(static_cast<float>(sigma_min));
  // PIDStepSizeController with pcoeff 0, icoeff 1, dcoeff 0: factor = (1/error)^(1/order), softened by atan.
  const double order = c.params.eta != 0 ? 1.5 : 3.0;
  double h = kHInit;
  const double b1 = 1.0 / order;
  const double numel_sqrt = std::sqrt(static_cast<double>(x.numel()));

  double s = t_start;
  at::Tensor x_prev = x;
  int step = 0;
  // The number of steps is not known ahead; progress reports an estimate from the remaining t range.
  while (s < t_end - 1e-5) {
    c.model.CheckInterrupt();
    DpmSolver::Cache cache;
    const double t = std::min(t_end, s + h);
    const auto [t_, su] = solver.Ancestral(s, t, t_end);
    const at::Tensor eps = solver.Eps(cache, "eps", x, s);
    const at::Tensor denoised = x - eps * SigmaOf(s);
    const at::Tensor x_low = solver.Step2(x, s, t_, 1.0 / 3, cache);
    const at::Tensor x_high = solver.Step3(x, s, t_, cache);
    const at::Tensor delta = at::maximum(at::full({}, kAtol, x.options()),
                                         at::maximum(x_low.abs(), x_prev.abs()) * kRtol);
    const double error = ((x_low - x_high) / delta).norm().item<double>() / numel_sqrt;
    const double factor = 1 + std::atan(std::pow(1 / (error + kEps), b1) - 1);
    const bool accept = factor >= kAcceptSafety;
    h *= factor;
    if (accept) {
      x_prev = x_low;
      x = x_high + c.noise(SigmaOf(s), SigmaOf(t)) * (su * c.params.s_noise);
      s = t;
    }
    const int estimate = step + 1 + static_cast<int>(std::ceil(std::max(0.0, t_end - s) / std::max(h, 1e-3)));
    c.model.ReportStep(step, estimate, SigmaOf(s), x, denoised);
    ++step;
  }
  return x;
}

}  // namespace atelier::engine
