// k-diffusion's samplers (sampling.py) as WebUI 1.10 calls them, plus WebUI's LCM and Restart samplers.
#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <map>
#include <utility>

#include <ATen/ATen.h>

#include "engine/sampling/sampler_kernels.h"
#include "engine/sampling/schedulers.h"

namespace atelier::engine {
namespace {

// (x - denoised) / sigma
at::Tensor ToD(const at::Tensor& x, double sigma, const at::Tensor& denoised) { return (x - denoised) / sigma; }

struct AncestralStep {
  double down, up;
};

AncestralStep GetAncestralStep(double sigma_from, double sigma_to, double eta) {
  if (eta == 0) return {sigma_to, 0.0};
  const double up = std::min(
      sigma_to, eta * std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                                (sigma_from * sigma_from)));
  return {std::sqrt(sigma_to * sigma_to - up * up), up};
}

int Steps(const Sigmas& sigmas) { return static_cast<int>(sigmas.size()) - 1; }

// Euler/Heun/DPM2's churn: gamma for step i.
double Gamma(const KernelContext& c, const Sigmas& sigmas, int i) {
  const auto& p = c.params;
  if (p.s_tmin <= sigmas[i] && sigmas[i] <= p.s_tmax) {
    return std::min(p.s_churn / Steps(sigmas), std::sqrt(2.0) - 1);
  }
  return 0.0;
}

// The churn prologue shared by Euler, Heun and DPM2: k-diffusion draws the noise every step even when gamma is 0.
double Churn(KernelContext& c, at::Tensor& x, const Sigmas& sigmas, int i) {
  const double gamma = Gamma(c, sigmas, i);
  const at::Tensor eps = c.noise(sigmas[i], sigmas[i + 1]);  // drawn even when unused: the RNG stream stays WebUI's
  const double sigma_hat = sigmas[i] * (gamma + 1);
  if (gamma > 0) x = x + eps * (c.params.s_noise * std::sqrt(sigma_hat * sigma_hat - sigmas[i] * sigmas[i]));
  return sigma_hat;
}

// The first half of an Euler/Heun/DPM2 step: churn, the model at sigma_hat, the step report; returns d.
at::Tensor ChurnedDerivative(KernelContext& c, at::Tensor& x, const Sigmas& sigmas, int i, double& sigma_hat) {
  sigma_hat = Churn(c, x, sigmas, i);
  const at::Tensor denoised = c.model.Denoise(x, sigma_hat);
  const at::Tensor d = ToD(x, sigma_hat, denoised);
  c.model.ReportStep(i, static_cast<int>(sigmas.size()) - 1, sigmas[i], x, denoised);
  return d;
}

// Heun's step from sigma to sigma_next given the derivative d at sigma (Euler when sigma_next is 0).
at::Tensor HeunUpdate(KernelContext& c, const at::Tensor& x, const at::Tensor& d, double sigma, double sigma_next) {
  const double dt = sigma_next - sigma;
  if (sigma_next == 0) return x + d * dt;
  const at::Tensor x_2 = x + d * dt;
  const at::Tensor d_2 = ToD(x_2, sigma_next, c.model.Denoise(x_2, sigma_next));
  return x + (d + d_2) / 2 * dt;
}

double TFromSigma(double sigma) { return -std::log(sigma); }
double SigmaFromT(double t) { return std::exp(-t); }

// The Brownian/ancestral noise term shared by the SDE samplers.
void AddNoise(KernelContext& c, at::Tensor& x, double sigma, double sigma_next, double scale) {
  x = x + c.noise(sigma, sigma_next) * (c.params.s_noise * scale);
}

// LMS coefficient: integral over [t_i, t_{i+1}] of the Lagrange basis polynomial j through t_i, t_{i-1}, ...
// The integrand is a polynomial of degree < 4, so 5-point Gauss-Legendre is exact (k-diffusion uses quad).
double LinearMultistepCoeff(int order, const Sigmas& t, int i, int j) {
  auto fn = [&](double tau) {
    double prod = 1.0;
    for (int k = 0; k < order; ++k) {
      if (k == j) continue;
      prod *= (tau - t[i - k]) / (t[i - j] - t[i - k]);
    }
    return prod;
  };
  static constexpr double kNodes[5] = {0.0, -0.5384693101056831, 0.5384693101056831, -0.9061798459386640,
                                       0.9061798459386640};
  static constexpr double kWeights[5] = {0.5688888888888889, 0.4786286704993665, 0.4786286704993665,
                                         0.2369268850561891, 0.2369268850561891};
  const double a = t[i], b = t[i + 1];
  double sum = 0;
  for (int k = 0; k < 5; ++k) sum += kWeights[k] * fn(0.5 * (b - a) * kNodes[k] + 0.5 * (a + b));
  return 0.5 * (b - a) * sum;
}

// get_sigmas_karras as doubles, for Restart's segments.
Sigmas KarrasList(int n, double sigma_min, double sigma_max) {
  const at::Tensor t = KarrasSigmas(n, sigma_min, sigma_max, 7.0);
  return Sigmas(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

}  // namespace

at::Tensor SampleEuler(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    double sigma_hat = 0;
    const at::Tensor d = ChurnedDerivative(c, x, sigmas, i, sigma_hat);
    x = x + d * (sigmas[i + 1] - sigma_hat);
  }
  return x;
}

at::Tensor SampleEulerAncestral(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    const auto step = GetAncestralStep(sigmas[i], sigmas[i + 1], c.params.eta);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    x = x + ToD(x, sigmas[i], denoised) * (step.down - sigmas[i]);
    if (sigmas[i + 1] > 0) AddNoise(c, x, sigmas[i], sigmas[i + 1], step.up);
  }
  return x;
}

at::Tensor SampleHeun(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    double sigma_hat = 0;
    const at::Tensor d = ChurnedDerivative(c, x, sigmas, i, sigma_hat);
    x = HeunUpdate(c, x, d, sigma_hat, sigmas[i + 1]);
  }
  return x;
}

at::Tensor SampleDpm2(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    double sigma_hat = 0;
    const at::Tensor d = ChurnedDerivative(c, x, sigmas, i, sigma_hat);
    if (sigmas[i + 1] == 0) {
      x = x + d * (sigmas[i + 1] - sigma_hat);
    } else {
      // Midpoint in log sigma.
      const double sigma_mid = std::exp(0.5 * (std::log(sigma_hat) + std::log(sigmas[i + 1])));
      const at::Tensor x_2 = x + d * (sigma_mid - sigma_hat);
      const at::Tensor d_2 = ToD(x_2, sigma_mid, c.model.Denoise(x_2, sigma_mid));
      x = x + d_2 * (sigmas[i + 1] - sigma_hat);
    }
  }
  return x;
}

at::Tensor SampleDpm2Ancestral(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    const auto step = GetAncestralStep(sigmas[i], sigmas[i + 1], c.params.eta);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    const at::Tensor d = ToD(x, sigmas[i], denoised);
    if (step.down == 0) {
      x = x + d * (step.down - sigmas[i]);
    } else {
      const double sigma_mid = std::exp(0.5 * (std::log(sigmas[i]) + std::log(step.down)));
      const at::Tensor x_2 = x + d * (sigma_mid - sigmas[i]);
      const at::Tensor d_2 = ToD(x_2, sigma_mid, c.model.Denoise(x_2, sigma_mid));
      x = x + d_2 * (step.down - sigmas[i]);
      // k-diffusion adds the noise in this branch only (sigma_down can be 0 with sigma_next > 0 when eta > 1).
      AddNoise(c, x, sigmas[i], sigmas[i + 1], step.up);
    }
  }
  return x;
}

at::Tensor SampleLms(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  constexpr int kOrder = 4;
  std::deque<at::Tensor> ds;
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    ds.push_back(ToD(x, sigmas[i], denoised));
    if (static_cast<int>(ds.size()) > kOrder) ds.pop_front();
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    const int cur_order = std::min(i + 1, kOrder);
    // Newest derivative first, as zip(coeffs, reversed(ds)).
    for (int j = 0; j < cur_order; ++j) {
      x = x + ds[ds.size() - 1 - j] * LinearMultistepCoeff(cur_order, sigmas, i, j);
    }
  }
  return x;
}

at::Tensor SampleDpmpp2sAncestral(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    const auto step = GetAncestralStep(sigmas[i], sigmas[i + 1], c.params.eta);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    if (step.down == 0) {
      x = x + ToD(x, sigmas[i], denoised) * (step.down - sigmas[i]);
    } else {
      // DPM-Solver++(2S)
      const double t = TFromSigma(sigmas[i]), t_next = TFromSigma(step.down);
      const double h = t_next - t, s = t + 0.5 * h;
      const at::Tensor x_2 = x * (SigmaFromT(s) / SigmaFromT(t)) - denoised * std::expm1(-h * 0.5);
      const at::Tensor denoised_2 = c.model.Denoise(x_2, SigmaFromT(s));
      x = x * (SigmaFromT(t_next) / SigmaFromT(t)) - denoised_2 * std::expm1(-h);
    }
    if (sigmas[i + 1] > 0) AddNoise(c, x, sigmas[i], sigmas[i + 1], step.up);
  }
  return x;
}

at::Tensor SampleDpmpp2m(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  at::Tensor old_denoised;
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    const double t = TFromSigma(sigmas[i]), t_next = TFromSigma(sigmas[i + 1]);
    const double h = t_next - t;
    const double ratio = SigmaFromT(t_next) / SigmaFromT(t);
    if (!old_denoised.defined() || sigmas[i + 1] == 0) {
      x = x * ratio - denoised * std::expm1(-h);
    } else {
      const double r = (t - TFromSigma(sigmas[i - 1])) / h;
      const at::Tensor denoised_d = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r));
      x = x * ratio - denoised_d * std::expm1(-h);
    }
    old_denoised = denoised;
  }
  return x;
}

at::Tensor SampleDpmppSde(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  constexpr double r = 0.5;
  const double eta = c.params.eta;
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    if (sigmas[i + 1] == 0) {
      x = x + ToD(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i]);
      continue;
    }
    const double t = TFromSigma(sigmas[i]), t_next = TFromSigma(sigmas[i + 1]);
    const double h = t_next - t, s = t + h * r, fac = 1 / (2 * r);
    // Step 1
    auto step = GetAncestralStep(SigmaFromT(t), SigmaFromT(s), eta);
    const double s_ = TFromSigma(step.down);
    at::Tensor x_2 = x * (SigmaFromT(s_) / SigmaFromT(t)) - denoised * std::expm1(t - s_);
    AddNoise(c, x_2, SigmaFromT(t), SigmaFromT(s), step.up);
    const at::Tensor denoised_2 = c.model.Denoise(x_2, SigmaFromT(s));
    // Step 2
    step = GetAncestralStep(SigmaFromT(t), SigmaFromT(t_next), eta);
    const double t_next_ = TFromSigma(step.down);
    const at::Tensor denoised_d = denoised * (1 - fac) + denoised_2 * fac;
    x = x * (SigmaFromT(t_next_) / SigmaFromT(t)) - denoised_d * std::expm1(t - t_next_);
    AddNoise(c, x, SigmaFromT(t), SigmaFromT(t_next), step.up);
  }
  return x;
}

at::Tensor SampleDpmpp2mSde(KernelContext& c, at::Tensor x, const Sigmas& sigmas, bool heun) {
  const double eta = c.params.eta;
  at::Tensor old_denoised;
  double h_last = 0, h = 0;
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    if (sigmas[i + 1] == 0) {
      x = denoised;
    } else {
      const double t = -std::log(sigmas[i]), s = -std::log(sigmas[i + 1]);
      h = s - t;
      const double eta_h = eta * h;
      const double phi = -std::expm1(-h - eta_h);
      x = x * (sigmas[i + 1] / sigmas[i] * std::exp(-eta_h)) + denoised * phi;
      if (old_denoised.defined()) {
        const double r = h_last / h;
        if (heun) {
          x = x + (denoised - old_denoised) * ((phi / (-h - eta_h) + 1) * (1 / r));
        } else {
          x = x + (denoised - old_denoised) * (0.5 * phi * (1 / r));
        }
      }
      if (eta != 0) AddNoise(c, x, sigmas[i], sigmas[i + 1], sigmas[i + 1] * std::sqrt(-std::expm1(-2 * eta_h)));
    }
    old_denoised = denoised;
    h_last = h;
  }
  return x;
}

at::Tensor SampleDpmpp3mSde(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  const double eta = c.params.eta;
  at::Tensor denoised_1, denoised_2;
  double h = 0, h_1 = 0, h_2 = 0;
  bool have_h = false, have_h1 = false, have_h2 = false;
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    if (sigmas[i + 1] == 0) {
      x = denoised;
    } else {
      const double t = -std::log(sigmas[i]), s = -std::log(sigmas[i + 1]);
      h = s - t;
      have_h = true;
      const double h_eta = h * (eta + 1);
      x = x * std::exp(-h_eta) + denoised * -std::expm1(-h_eta);
      if (have_h2) {
        const double r0 = h_1 / h, r1 = h_2 / h;
        const at::Tensor d1_0 = (denoised - denoised_1) / r0;
        const at::Tensor d1_1 = (denoised_1 - denoised_2) / r1;
        const at::Tensor d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1));
        const at::Tensor d2 = (d1_0 - d1_1) / (r0 + r1);
        const double phi_2 = std::expm1(-h_eta) / h_eta + 1;
        const double phi_3 = phi_2 / h_eta - 0.5;
        x = x + d1 * phi_2 - d2 * phi_3;
      } else if (have_h1) {
        const double r = h_1 / h;
        const double phi_2 = std::expm1(-h_eta) / h_eta + 1;
        x = x + (denoised - denoised_1) / r * phi_2;
      }
      if (eta != 0) {
        AddNoise(c, x, sigmas[i], sigmas[i + 1], sigmas[i + 1] * std::sqrt(-std::expm1(-2 * h * eta)));
      }
    }
    denoised_2 = denoised_1;
    denoised_1 = denoised;
    h_2 = h_1;
    have_h2 = have_h1;
    h_1 = h;
    have_h1 = have_h;
  }
  return x;
}

at::Tensor SampleLcm(KernelContext& c, at::Tensor x, const Sigmas& sigmas) {
  for (int i = 0; i < Steps(sigmas); ++i) {
    const at::Tensor denoised = c.model.Denoise(x, sigmas[i]);
    c.model.ReportStep(i, Steps(sigmas), sigmas[i], x, denoised);
    x = denoised;
    if (sigmas[i + 1] > 0) x = x + c.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1];
  }
  return x;
}

// WebUI's restart sampler (sd_samplers_extra.py): Heun steps, with restart segments for >= 20 steps.
at::Tensor SampleRestart(KernelContext& c, at::Tensor x, const Sigmas& given) {
  Sigmas sigmas = given;
  const int steps = Steps(sigmas);
  std::map<int, std::array<int, 3>> restart;  // index -> (restart_steps, restart_times, restart_max)
  std::vector<std::pair<double, double>> restart_keys;
  if (steps >= 20) {
    int restart_steps = 9, restart_times = 1;
    if (steps >= 36) {
      restart_steps = steps / 4;
      restart_times = 2;
    }
    sigmas = KarrasList(steps - restart_steps * restart_times, sigmas[sigmas.size() - 2], sigmas[0]);
    // {0.1: [restart_steps + 1, restart_times, 2]}, keyed by the index of the sigma closest to 0.1.
    auto nearest = [&](double value) {
      int best = 0;
      for (int k = 1; k < static_cast<int>(sigmas.size()); ++k) {
        if (std::fabs(static_cast<float>(sigmas[k] - value)) < std::fabs(static_cast<float>(sigmas[best] - value))) {
          best = k;
        }
      }
      return best;
    };
    restart[nearest(0.1)] = {restart_steps + 1, restart_times, 2};
    std::vector<std::pair<double, double>> steps_list;
    for (int i = 0; i + 1 < static_cast<int>(sigmas.size()); ++i) {
      steps_list.emplace_back(sigmas[i], sigmas[i + 1]);
      auto it = restart.find(i + 1);
      if (it == restart.end()) continue;
      const int min_idx = i + 1, max_idx = nearest(it->second[2]);
      if (max_idx < min_idx) {
        Sigmas sigma_restart = KarrasList(it->second[0], sigmas[min_idx], sigmas[max_idx]);
        sigma_restart.pop_back();
        for (int times = it->second[1]; times > 0; --times) {
          for (size_t k = 0; k + 1 < sigma_restart.size(); ++k) {
            steps_list.emplace_back(sigma_restart[k], sigma_restart[k + 1]);
          }
        }
      }
    }
    restart_keys = std::move(steps_list);
  } else {
    for (int i = 0; i < steps; ++i) restart_keys.emplace_back(sigmas[i], sigmas[i + 1]);
  }

  const int total = static_cast<int>(restart_keys.size());
  int step_id = 0;
  bool first = true;
  double last_sigma = 0;
  for (const auto& [old_sigma, new_sigma] : restart_keys) {
    if (first) {
      last_sigma = old_sigma;
      first = false;
    } else if (last_sigma < old_sigma) {
      x = x + c.noise(old_sigma, last_sigma) *
                  (c.params.s_noise * std::sqrt(old_sigma * old_sigma - last_sigma * last_sigma));
    }
    // Heun step from old_sigma to new_sigma (Euler when new_sigma is 0).
    const at::Tensor denoised = c.model.Denoise(x, old_sigma);
    const at::Tensor d = ToD(x, old_sigma, denoised);
    c.model.ReportStep(step_id, total, new_sigma, x, denoised);
    x = HeunUpdate(c, x, d, old_sigma, new_sigma);
    ++step_id;
    last_sigma = new_sigma;
  }
  return x;
}

}  // namespace atelier::engine
