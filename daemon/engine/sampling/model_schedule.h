// The noise levels of a discrete-time eps model as k-diffusion sees it (external.DiscreteSchedule under
// CompVisDenoiser): sigma_t = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t]) for t = 0..T-1, and the maps between
// sigma and (fractional) timesteps the samplers use. Also WebUI's LCM variant (modules/sd_samplers_lcm.py,
// LCMCompVisDenoiser), whose schedule has 50 of the 1000 timesteps and quantizes sigma -> t.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace atelier::engine {

class ModelSchedule {
 public:
  // CompVisDenoiser over `alphas_cumprod` (float32 [T], T >= 2, e.g. ComputeAlphasCumprod's [1000]).
  explicit ModelSchedule(const at::Tensor& alphas_cumprod);

  // LCMCompVisDenoiser: 50 original timesteps, skip_steps = 20, alphas_cumprod_valid[49 - x] =
  // alphas_cumprod[999 - 20 x]. `alphas_cumprod` must have 1000 values (WebUI hard-codes it).
  static ModelSchedule Lcm(const at::Tensor& alphas_cumprod);

  bool is_lcm() const { return skip_steps_ > 1; }
  // Model timesteps per schedule index: 1, or 20 for LCM.
  int skip_steps() const { return skip_steps_; }

  // The model's alphas_cumprod this was built from (all T of them, also for LCM): DDIM/PLMS use it.
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  // float32, ascending ([T], or [50] for LCM), and their logs.
  const at::Tensor& sigmas() const { return sigmas_; }
  const at::Tensor& log_sigmas() const { return log_sigmas_; }
  // sigmas[0].item() and sigmas[-1].item() as Python doubles.
  double sigma_min() const { return sigma_min_; }
  double sigma_max() const { return sigma_max_; }

  // DiscreteSchedule.sigma_to_t: continuous (float32; log-linear interpolation between neighbouring indices,
  // clamped to [0, T-1]) or, with `quantize`, the index of the nearest log sigma (int64). LCM always quantizes
  // and returns index * 20 + 19 (int64), ignoring `quantize`.
  at::Tensor SigmaToT(const at::Tensor& sigma, bool quantize = false) const;
  // DiscreteSchedule.t_to_sigma: exp((1-w) log_sigmas[floor t] + w log_sigmas[ceil t]), float32. LCM first maps
  // t -> clamp((t - 19) / 20, 0, 49).
  at::Tensor TToSigma(const at::Tensor& t) const;

  // The same for one value, without tensor ops (a sampler converts every step). Float32 arithmetic as the tensor
  // versions; the result may differ from them by an ulp of log/exp.
  double SigmaToT(double sigma, bool quantize = false) const;
  double TToSigma(double t) const;

  // get_sigmas(n): t = linspace(T-1, 0, n) (float32) -> TToSigma, then 0 appended; n + 1 values. For LCM
  // t = linspace(SigmaToT(sigma_max), SigmaToT(sigma_min), n) = linspace(999, 19, n).
  at::Tensor UniformSigmas(int n) const;

 private:
  ModelSchedule(const at::Tensor& alphas_cumprod, const at::Tensor& schedule_alphas, int skip_steps);

  // DiscreteSchedule.t_to_sigma over this schedule's own indices (no LCM mapping).
  at::Tensor IndexToSigma(const at::Tensor& t) const;

  at::Tensor alphas_cumprod_;
  at::Tensor sigmas_;
  at::Tensor log_sigmas_;
  std::vector<float> log_sigmas_host_;  // log_sigmas_ for the scalar paths
  double sigma_min_ = 0, sigma_max_ = 0;
  int skip_steps_ = 1;
};

}  // namespace atelier::engine
