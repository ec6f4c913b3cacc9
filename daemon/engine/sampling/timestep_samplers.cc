// WebUI's timestep samplers (sd_samplers_timesteps_impl.py): DDIM, DDIM CFG++, PLMS and UniPC. The model is the
// CFG-mixed eps prediction at integer (DDIM/PLMS) or fractional (UniPC) timesteps.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>

#include "engine/sampling/sampler_kernels.h"

namespace atelier::engine {
namespace {

std::vector<double> ToDoubles(const at::Tensor& t) {
  const at::Tensor f = t.to(at::kCPU, at::kFloat).contiguous();
  return std::vector<double>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

// The per-step constants of DDIM/PLMS: alphas at the timesteps, alphas_prev at the previous ones (index 0 uses
// alphas_cumprod[0], as WebUI pads the shifted timesteps with 0).
struct DdimTable {
  std::vector<double> alphas, alphas_prev;
  DdimTable(const std::vector<int>& timesteps, const at::Tensor& alphas_cumprod) {
    const std::vector<double> ac = ToDoubles(alphas_cumprod);
    for (size_t k = 0; k < timesteps.size(); ++k) {
      alphas.push_back(ac[timesteps[k]]);
      alphas_prev.push_back(ac[k == 0 ? 0 : timesteps[k - 1]]);
    }
  }
};

// Solves the small dense system A x = b (Gaussian elimination with partial pivoting; n <= 4).
std::vector<double> Solve(std::vector<std::vector<double>> a, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r) {
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    }
    std::swap(a[col], a[pivot]);
    std::swap(b[col], b[pivot]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = a[r][col] / a[col][col];
      for (size_t k = col; k < n; ++k) a[r][k] -= f * a[col][k];
      b[r] -= f * b[col];
    }
  }
  std::vector<double> x(n);
  for (size_t i = n; i-- > 0;) {
    double sum = b[i];
    for (size_t k = i + 1; k < n; ++k) sum -= a[i][k] * x[k];
    x[i] = sum / a[i][i];
  }
  return x;
}

// UniPC's NoiseScheduleVP('discrete'): log(alpha_t) piecewise linear over t_n = (n + 1) / N.
class DiscreteVpSchedule {
 public:
  explicit DiscreteVpSchedule(const at::Tensor& alphas_cumprod) {
    for (double a : ToDoubles(alphas_cumprod)) log_alpha_.push_back(0.5 * std::log(a));
    const int n = static_cast<int>(log_alpha_.size());
    for (int i = 0; i < n; ++i) t_.push_back(static_cast<double>(i + 1) / n);
  }
  int total_n() const { return static_cast<int>(t_.size()); }
  double LogMeanCoeff(double t) const { return Interp(t, t_, log_alpha_); }
  double Alpha(double t) const { return std::exp(LogMeanCoeff(t)); }
  double Std(double t) const { return std::sqrt(1 - std::exp(2 * LogMeanCoeff(t))); }
  double Lambda(double t) const {
    const double lmc = LogMeanCoeff(t);
    return lmc - 0.5 * std::log(1 - std::exp(2 * lmc));
  }
  double InverseLambda(double lambda) const {
    const double log_alpha = -0.5 * std::log1p(std::exp(-2 * lambda));
    // log_alpha decreases with t: interpolate over the reversed arrays.
    std::vector<double> xs(log_alpha_.rbegin(), log_alpha_.rend()), ys(t_.rbegin(), t_.rend());
    return Interp(log_alpha, xs, ys);
  }

 private:
  // Piecewise linear through (xs, ys) (xs ascending), extended linearly beyond both ends.
  static double Interp(double x, const std::vector<double>& xs, const std::vector<double>& ys) {
    const size_t n = xs.size();
    size_t hi = std::upper_bound(xs.begin(), xs.end(), x) - xs.begin();
    hi = std::clamp<size_t>(hi, 1, n - 1);
    const size_t lo = hi - 1;
    return ys[lo] + (x - xs[lo]) * (ys[hi] - ys[lo]) / (xs[hi] - xs[lo]);
  }
  std::vector<double> t_, log_alpha_;
};

}  // namespace

at::Tensor SampleDdim(KernelContext& c, at::Tensor x, const std::vector<int>& timesteps,
                      const at::Tensor& alphas_cumprod, bool cfgpp) {
  const DdimTable table(timesteps, alphas_cumprod);
  const double eta = c.params.eta;
  if (cfgpp) c.model.set_cfg_scale_multiplier(1 / 12.5);
  const int total = static_cast<int>(timesteps.size()) - 1;
  for (int i = 0; i < total; ++i) {
    const int index = total - i;
    const at::Tensor e_t = c.model.PredictEps(x, timesteps[index]);
    const double a_t = table.alphas[index], a_prev = table.alphas_prev[index];
    const double sigma_t = eta * std::sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev));
    const at::Tensor pred_x0 = (x - e_t * std::sqrt(1 - a_t)) / std::sqrt(a_t);
    // CFG++ points back along the unconditional eps.
    const at::Tensor& direction = cfgpp ? c.model.last_uncond_eps() : e_t;
    const at::Tensor dir_xt = direction * std::sqrt(1 - a_prev - sigma_t * sigma_t);
    // WebUI draws the noise every step, even when eta is 0.
    const at::Tensor noise = c.noise(0, 0) * sigma_t;
    x = pred_x0 * std::sqrt(a_prev) + dir_xt + noise;
    c.model.ReportStep(i, total, 0, x, pred_x0);
  }
  if (cfgpp) c.model.set_cfg_scale_multiplier(1);
  return x;
}

at::Tensor SamplePlms(KernelContext& c, at::Tensor x, const std::vector<int>& timesteps,
                      const at::Tensor& alphas_cumprod) {
  const DdimTable table(timesteps, alphas_cumprod);
  std::vector<at::Tensor> old_eps;
  auto x_prev_and_pred_x0 = [&](const at::Tensor& e_t, int index) {
    const double a_t = table.alphas[index], a_prev = table.alphas_prev[index];
    at::Tensor pred_x0 = (x - e_t * std::sqrt(1 - a_t)) / std::sqrt(a_t);
    at::Tensor x_prev = pred_x0 * std::sqrt(a_prev) + e_t * std::sqrt(1 - a_prev);
    return std::make_pair(x_prev, pred_x0);
  };
  const int total = static_cast<int>(timesteps.size()) - 1;
  for (int i = 0; i < total; ++i) {
    const int index = total - i;
    const at::Tensor e_t = c.model.PredictEps(x, timesteps[index]);
    at::Tensor e_t_prime;
    if (old_eps.empty()) {
      // Pseudo improved Euler (2nd order).
      const at::Tensor x_prev = x_prev_and_pred_x0(e_t, index).first;
      const at::Tensor e_t_next = c.model.PredictEps(x_prev, timesteps[std::max(index - 1, 0)]);
      e_t_prime = (e_t + e_t_next) / 2;
    } else if (old_eps.size() == 1) {
      e_t_prime = (e_t * 3 - old_eps.back()) / 2;
    } else if (old_eps.size() == 2) {
      e_t_prime = (e_t * 23 - old_eps.back() * 16 + old_eps[old_eps.size() - 2] * 5) / 12;
    } else {
      const size_t n = old_eps.size();
      e_t_prime = (e_t * 55 - old_eps[n - 1] * 59 + old_eps[n - 2] * 37 - old_eps[n - 3] * 9) / 24;
    }
    auto [x_prev, pred_x0] = x_prev_and_pred_x0(e_t_prime, index);
    old_eps.push_back(e_t);
    if (old_eps.size() >= 4) old_eps.erase(old_eps.begin());
    x = x_prev;
    c.model.ReportStep(i, total, 0, x, pred_x0);
  }
  return x;
}

at::Tensor SampleUniPc(KernelContext& c, at::Tensor x, const std::vector<int>& timesteps,
                       const at::Tensor& alphas_cumprod, const UniPcOptions& options, bool img2img) {
  const DiscreteVpSchedule ns(alphas_cumprod);
  const int steps = static_cast<int>(timesteps.size());
  if (steps == 0) return x;  // img2img with t_enc 0: nothing to run (DDIM and PLMS return their start too)
  const int order = std::max(1, std::min(options.order, steps));
  const double t_0 = 1.0 / ns.total_n();
  const double t_T = img2img ? timesteps.back() / 1000.0 + 1 / 1000.0 : 1.0;

  // Time grid (steps + 1 points from t_T to t_0).
  std::vector<double> ts(steps + 1);
  for (int k = 0; k <= steps; ++k) {
    const double f = static_cast<double>(k) / steps;
    switch (options.skip_type) {
      case UniPcOptions::SkipType::kTimeUniform:
        ts[k] = t_T + f * (t_0 - t_T);
        break;
      case UniPcOptions::SkipType::kTimeQuadratic: {
        const double r = std::sqrt(t_T) + f * (std::sqrt(t_0) - std::sqrt(t_T));
        ts[k] = r * r;
        break;
      }
      case UniPcOptions::SkipType::kLogSnr: {
        const double l_T = ns.Lambda(t_T), l_0 = ns.Lambda(t_0);
        ts[k] = ns.InverseLambda(l_T + f * (l_0 - l_T));
        break;
      }
    }
  }

  // Data prediction x0 = (x - sigma_t eps) / alpha_t, eps at the model's time (t - 1/N) * 1000.
  auto model_fn = [&](const at::Tensor& xs, double t) {
    const at::Tensor eps = c.model.PredictEps(xs, (t - 1.0 / ns.total_n()) * 1000.0);
    return (xs - eps * ns.Std(t)) / ns.Alpha(t);
  };

  // UniPC runs len(timesteps) = requested steps + 1 updates; the last one evaluates no model, and WebUI reports
  // no x0 for it, so progress counts the requested steps.
  int callback_index = 0;
  auto after_update = [&](const at::Tensor& xs, const at::Tensor& model_x) {
    if (model_x.defined()) c.model.ReportStep(callback_index++, steps - 1, 0, xs, model_x);
  };

  // One multistep UniPC update (B(h) variants) from the previous points to t; returns x_t and model(x_t) when
  // the corrector ran.
  auto update = [&](const at::Tensor& xs, const std::vector<at::Tensor>& model_prev,
                    const std::vector<double>& t_prev, double t, int step_order, bool use_corrector) {
    const double t_prev_0 = t_prev.back();
    const double lambda_prev_0 = ns.Lambda(t_prev_0), lambda_t = ns.Lambda(t);
    const at::Tensor& model_prev_0 = model_prev.back();
    const double sigma_prev_0 = ns.Std(t_prev_0), sigma_t = ns.Std(t), alpha_t = ns.Alpha(t);
    const double h = lambda_t - lambda_prev_0;

    std::vector<double> rks;
    std::vector<at::Tensor> d1s;
    for (int i = 1; i < step_order; ++i) {
      const double rk = (ns.Lambda(t_prev[t_prev.size() - 1 - i]) - lambda_prev_0) / h;
      rks.push_back(rk);
      d1s.push_back((model_prev[model_prev.size() - 1 - i] - model_prev_0) / rk);
    }
    rks.push_back(1.0);

    const double hh = -h;  // predict_x0
    const double h_phi_1 = std::expm1(hh);
    double h_phi_k = h_phi_1 / hh - 1;
    double factorial = 1;
    const double b_h = options.bh2 ? std::expm1(hh) : hh;
    std::vector<std::vector<double>> r_mat;
    std::vector<double> b;
    for (int i = 1; i <= step_order; ++i) {
      std::vector<double> row;
      for (double rk : rks) row.push_back(std::pow(rk, i - 1));
      r_mat.push_back(row);
      b.push_back(h_phi_k * factorial / b_h);
      factorial *= i + 1;
      h_phi_k = h_phi_k / hh - 1 / factorial;
    }

    std::vector<double> rhos_p, rhos_c;
    if (!d1s.empty()) {
      if (step_order == 2) {
        rhos_p = {0.5};
      } else {
        std::vector<std::vector<double>> sub(step_order - 1);
        for (int r = 0; r < step_order - 1; ++r) sub[r].assign(r_mat[r].begin(), r_mat[r].end() - 1);
        rhos_p = Solve(sub, std::vector<double>(b.begin(), b.end() - 1));
      }
    }
    if (use_corrector) rhos_c = step_order == 1 ? std::vector<double>{0.5} : Solve(r_mat, b);

    const at::Tensor x_t_ = xs * (sigma_t / sigma_prev_0) - model_prev_0 * (alpha_t * h_phi_1);
    at::Tensor x_t = x_t_;
    if (!d1s.empty()) {
      at::Tensor pred_res = d1s[0] * rhos_p[0];
      for (size_t k = 1; k < d1s.size(); ++k) pred_res = pred_res + d1s[k] * rhos_p[k];
      x_t = x_t_ - pred_res * (alpha_t * b_h);
    }
    at::Tensor model_t;
    if (use_corrector) {
      model_t = model_fn(x_t, t);
      at::Tensor corr = (model_t - model_prev_0) * rhos_c.back();
      for (size_t k = 0; k < d1s.size(); ++k) corr = corr + d1s[k] * rhos_c[k];
      x_t = x_t_ - corr * (alpha_t * b_h);
    }
    return std::make_pair(x_t, model_t);
  };

  std::vector<at::Tensor> model_prev{model_fn(x, ts[0])};
  std::vector<double> t_prev{ts[0]};
  for (int init_order = 1; init_order < order; ++init_order) {
    auto [x_next, model_x] = update(x, model_prev, t_prev, ts[init_order], init_order, true);
    x = x_next;
    if (!model_x.defined()) model_x = model_fn(x, ts[init_order]);
    after_update(x, model_x);
    model_prev.push_back(model_x);
    t_prev.push_back(ts[init_order]);
  }
  for (int step = order; step <= steps; ++step) {
    const int step_order = options.lower_order_final ? std::min(order, steps + 1 - step) : order;
    const bool use_corrector = step != steps;
    auto [x_next, model_x] = update(x, model_prev, t_prev, ts[step], step_order, use_corrector);
    x = x_next;
    after_update(x, model_x);
    for (int i = 0; i + 1 < order; ++i) {
      t_prev[i] = t_prev[i + 1];
      model_prev[i] = model_prev[i + 1];
    }
    t_prev.back() = ts[step];
    if (step < steps) {
      if (!model_x.defined()) model_x = model_fn(x, ts[step]);
      model_prev.back() = model_x;
    }
  }
  return x;
}

}  // namespace atelier::engine
