#include "engine/sampling/model_schedule.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace atelier::engine {
namespace {

// WebUI's LCMCompVisDenoiser: 1000 model timesteps, 50 "original" ones.
constexpr int64_t kLcmTimesteps = 1000;
constexpr int64_t kLcmOriginalTimesteps = 50;
constexpr int kLcmSkipSteps = kLcmTimesteps / kLcmOriginalTimesteps;

}  // namespace

ModelSchedule::ModelSchedule(const at::Tensor& alphas_cumprod) : ModelSchedule(alphas_cumprod, alphas_cumprod, 1) {}

ModelSchedule::ModelSchedule(const at::Tensor& alphas_cumprod, const at::Tensor& schedule_alphas, int skip_steps)
    : skip_steps_(skip_steps) {
  TORCH_CHECK(alphas_cumprod.dim() == 1 && schedule_alphas.dim() == 1 && schedule_alphas.numel() >= 2,
              "ModelSchedule: alphas_cumprod must be 1-D with at least 2 values");
  alphas_cumprod_ = alphas_cumprod.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor a = schedule_alphas.to(at::kCPU, at::kFloat).contiguous();
  // ((1 - a) / a) ** 0.5: torch turns pow(x, 0.5) into sqrt.
  sigmas_ = (at::rsub(a, 1) / a).sqrt();
  log_sigmas_ = sigmas_.log();
  const float* ls = log_sigmas_.data_ptr<float>();
  log_sigmas_host_.assign(ls, ls + log_sigmas_.numel());
  sigma_min_ = sigmas_[0].item<double>();
  sigma_max_ = sigmas_[-1].item<double>();
}

ModelSchedule ModelSchedule::Lcm(const at::Tensor& alphas_cumprod) {
  TORCH_CHECK(alphas_cumprod.dim() == 1 && alphas_cumprod.numel() == kLcmTimesteps,
              "ModelSchedule::Lcm: alphas_cumprod must have 1000 values");
  // alphas_cumprod_valid[49 - x] = alphas_cumprod[999 - 20 x], i.e. indices 19, 39, ..., 999.
  const at::Tensor index = at::arange(kLcmSkipSteps - 1, kLcmTimesteps, kLcmSkipSteps, at::kLong);
  return ModelSchedule(alphas_cumprod, alphas_cumprod.to(at::kCPU).index_select(0, index), kLcmSkipSteps);
}

at::Tensor ModelSchedule::SigmaToT(const at::Tensor& sigma, bool quantize) const {
  const at::Tensor log_sigma = sigma.log();
  const at::Tensor dists = log_sigma.reshape({1, -1}) - log_sigmas_.unsqueeze(1);  // [T, numel]
  if (quantize || is_lcm()) {
    at::Tensor index = dists.abs().argmin(0).view(sigma.sizes());
    return is_lcm() ? index * skip_steps_ + (skip_steps_ - 1) : index;
  }
  // The last index whose log sigma is <= log_sigma (0 when none), at most T - 2.
  const at::Tensor low_idx = dists.ge(0).cumsum(0).argmax(0).clamp_max(log_sigmas_.size(0) - 2);
  const at::Tensor high_idx = low_idx + 1;
  const at::Tensor low = log_sigmas_.index_select(0, low_idx);
  const at::Tensor high = log_sigmas_.index_select(0, high_idx);
  const at::Tensor w = ((low - log_sigma.reshape(-1)) / (low - high)).clamp(0, 1);
  const at::Tensor t = at::rsub(w, 1) * low_idx + w * high_idx;
  return t.view(sigma.sizes());
}

at::Tensor ModelSchedule::IndexToSigma(const at::Tensor& t) const {
  const at::Tensor tf = t.to(at::kFloat);
  const at::Tensor low_idx = tf.floor().to(at::kLong);
  const at::Tensor high_idx = tf.ceil().to(at::kLong);
  const at::Tensor w = tf.frac();
  const at::Tensor log_sigma = at::rsub(w, 1) * at::take(log_sigmas_, low_idx) + w * at::take(log_sigmas_, high_idx);
  return log_sigma.exp();
}

at::Tensor ModelSchedule::TToSigma(const at::Tensor& t) const {
  if (!is_lcm()) return IndexToSigma(t);
  const at::Tensor index = (t.to(at::kFloat) - (skip_steps_ - 1)) / skip_steps_;
  return IndexToSigma(index.clamp(0, log_sigmas_.size(0) - 1));
}

double ModelSchedule::SigmaToT(double sigma, bool quantize) const {
  const std::vector<float>& ls = log_sigmas_host_;
  const float log_sigma = std::log(static_cast<float>(sigma));
  if (quantize || is_lcm()) {
    size_t best = 0;  // the first nearest, as argmin
    float best_dist = std::fabs(log_sigma - ls[0]);
    for (size_t i = 1; i < ls.size(); ++i) {
      const float d = std::fabs(log_sigma - ls[i]);
      if (d < best_dist) best_dist = d, best = i;
    }
    return static_cast<double>(best) * skip_steps_ + (skip_steps_ - 1);
  }
  const size_t count = std::upper_bound(ls.begin(), ls.end(), log_sigma) - ls.begin();
  const size_t low_idx = std::min(count == 0 ? 0 : count - 1, ls.size() - 2);
  const float low = ls[low_idx], high = ls[low_idx + 1];
  const float w = std::clamp((low - log_sigma) / (low - high), 0.0f, 1.0f);
  return (1.0f - w) * static_cast<float>(low_idx) + w * static_cast<float>(low_idx + 1);
}

double ModelSchedule::TToSigma(double t) const {
  const std::vector<float>& ls = log_sigmas_host_;
  const float last = static_cast<float>(ls.size() - 1);
  float tf = static_cast<float>(t);
  if (is_lcm()) tf = std::clamp((tf - (skip_steps_ - 1)) / skip_steps_, 0.0f, last);
  tf = std::clamp(tf, 0.0f, last);  // Python would wrap negative indices; the schedule never asks for them
  const size_t low_idx = static_cast<size_t>(std::floor(tf));
  const size_t high_idx = static_cast<size_t>(std::ceil(tf));
  const float w = tf - std::trunc(tf);
  return std::exp((1.0f - w) * ls[low_idx] + w * ls[high_idx]);
}

at::Tensor ModelSchedule::UniformSigmas(int n) const {
  at::Tensor t;
  if (is_lcm()) {
    const double start = SigmaToT(sigmas_[-1]).item<double>();
    const double end = SigmaToT(sigmas_[0]).item<double>();
    t = at::linspace(start, end, n, at::kFloat);
  } else {
    t = at::linspace(static_cast<double>(sigmas_.size(0) - 1), 0.0, n, at::kFloat);
  }
  const at::Tensor sigmas = TToSigma(t);
  return at::cat({sigmas, at::zeros({1}, sigmas.options())});
}

}  // namespace atelier::engine
