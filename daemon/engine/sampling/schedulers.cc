#include "engine/sampling/schedulers.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include <boost/math/policies/policy.hpp>
#include <boost/math/special_functions/beta.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace {

at::Tensor AppendZero(const at::Tensor& sigmas) { return at::cat({sigmas, at::zeros({1}, sigmas.options())}); }

// torch.FloatTensor(list of Python floats): each value rounded to float32.
at::Tensor FloatTensor(const std::vector<double>& values) {
  return at::tensor(values, at::kDouble).to(at::kFloat);
}

// np.linspace(0, 1, n): i * (1 / (n - 1)), the last value exactly 1; [0] for n == 1.
std::vector<double> NumpyUnitLinspace(int n) {
  std::vector<double> xs(n, 0.0);
  if (n < 2) return xs;
  const double step = 1.0 / (n - 1);
  for (int i = 0; i < n; ++i) xs[i] = i * step;
  xs[n - 1] = 1.0;
  return xs;
}

// np.interp(x, xs, ys) for ascending xs and xs[0] <= x <= xs[-1].
double NumpyInterp(double x, const std::vector<double>& xs, const std::vector<double>& ys) {
  const size_t last = xs.size() - 1;
  if (x >= xs[last]) return ys[last];
  size_t j = std::upper_bound(xs.begin(), xs.end(), x) - xs.begin();
  j = j == 0 ? 0 : j - 1;  // xs[j] <= x < xs[j + 1]
  if (xs[j] == x) return ys[j];
  const double slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]);
  return slope * (x - xs[j]) + ys[j];
}


at::Tensor Exponential(int n, double sigma_min, double sigma_max) {
  return AppendZero(at::linspace(std::log(sigma_max), std::log(sigma_min), n, at::kFloat).exp());
}

at::Tensor Polyexponential(int n, double sigma_min, double sigma_max, double rho) {
  const at::Tensor ramp = at::linspace(1.0, 0.0, n, at::kFloat).pow(rho);
  return AppendZero((ramp * (std::log(sigma_max) - std::log(sigma_min)) + std::log(sigma_min)).exp());
}

// inner_model.sigma_to_t(torch.tensor(sigma)): the double rounded to float32 first.
double ModelT(const ModelSchedule& model, double sigma) {
  return model.SigmaToT(at::scalar_tensor(sigma, at::kFloat)).item<double>();
}

// WebUI normal_scheduler; sgm_uniform = the same over n + 1 timesteps without the last.
at::Tensor Normal(int n, double sigma_min, double sigma_max, const ModelSchedule& model, bool sgm) {
  at::Tensor t = at::linspace(ModelT(model, sigma_max), ModelT(model, sigma_min), sgm ? n + 1 : n, at::kFloat);
  if (sgm) t = t.slice(0, 0, n);
  return AppendZero(model.TToSigma(t));
}

at::Tensor KlOptimal(int n, double sigma_min, double sigma_max) {
  const at::Tensor alpha_min = at::scalar_tensor(sigma_min, at::kFloat).arctan();
  const at::Tensor alpha_max = at::scalar_tensor(sigma_max, at::kFloat).arctan();
  const at::Tensor fraction = at::arange(n + 1, at::kLong).to(at::kFloat) / static_cast<double>(n);
  return (fraction * alpha_min + at::rsub(fraction, 1.0) * alpha_max).tan();
}

// get_align_your_steps_sigmas for SD1.x: the paper's 10-step list, resampled log-linearly (in numpy float64)
// unless n is its length.
at::Tensor AlignYourSteps(int n) {
  static const std::vector<double> kSd15 = {14.615, 6.475, 3.861, 2.697, 1.886, 1.396,
                                            0.963,  0.652, 0.399, 0.152, 0.029};
  std::vector<double> sigmas;
  if (n == static_cast<int>(kSd15.size())) {
    sigmas = kSd15;
  } else {
    const std::vector<double> xs = NumpyUnitLinspace(kSd15.size());
    std::vector<double> ys;
    for (auto it = kSd15.rbegin(); it != kSd15.rend(); ++it) ys.push_back(std::log(*it));
    for (double x : NumpyUnitLinspace(n)) sigmas.push_back(std::exp(NumpyInterp(x, xs, ys)));
    std::reverse(sigmas.begin(), sigmas.end());
  }
  sigmas.push_back(0.0);
  return FloatTensor(sigmas);
}

std::vector<float> HostSigmas(const ModelSchedule& model) {
  const at::Tensor s = model.sigmas().contiguous();
  return std::vector<float>(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
}

at::Tensor Simple(int n, const ModelSchedule& model) {
  const std::vector<float> s = HostSigmas(model);
  const double ss = static_cast<double>(s.size()) / n;
  std::vector<double> sigmas;
  for (int x = 0; x < n; ++x) sigmas.push_back(s[s.size() - 1 - static_cast<size_t>(x * ss)]);
  sigmas.push_back(0.0);
  return FloatTensor(sigmas);
}

at::Tensor Ddim(int n, const ModelSchedule& model) {
  const std::vector<float> s = HostSigmas(model);
  const size_t ss = std::max<size_t>(s.size() / n, 1);
  std::vector<double> sigmas;
  for (size_t x = 1; x < s.size(); x += ss) sigmas.push_back(s[x]);
  std::reverse(sigmas.begin(), sigmas.end());
  sigmas.push_back(0.0);
  return FloatTensor(sigmas);
}

// scipy.stats.beta.ppf(q, a, b) = the inverse regularized incomplete beta (scipy uses Boost's, in double).
double BetaPpf(double q, double a, double b) {
  using Policy = boost::math::policies::policy<boost::math::policies::promote_double<false>>;
  return boost::math::ibeta_inv(a, b, q, Policy());
}

// Beta as in WebUI 1.10.1: sigma_min + ppf(1 - linspace(0, 1, n)) * (sigma_max - sigma_min), in double.
at::Tensor BetaV1(int n, double sigma_min, double sigma_max, double a, double b) {
  std::vector<double> sigmas;
  for (double x : NumpyUnitLinspace(n)) sigmas.push_back(sigma_min + BetaPpf(1 - x, a, b) * (sigma_max - sigma_min));
  sigmas.push_back(0.0);
  return FloatTensor(sigmas);
}

// Beta on WebUI's dev branch: the quantiles place timesteps between t(sigma_min) and t(sigma_max).
at::Tensor BetaDev(int n, double sigma_min, double sigma_max, const ModelSchedule& model, double a, double b) {
  const double start = ModelT(model, sigma_max), end = ModelT(model, sigma_min);
  std::vector<double> quantiles;
  for (double x : NumpyUnitLinspace(n)) quantiles.push_back(BetaPpf(1 - x, a, b));
  const at::Tensor t = at::tensor(quantiles, at::kDouble).to(at::kFloat) * static_cast<float>(start - end) + end;
  return AppendZero(model.TToSigma(t));
}

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

}  // namespace

at::Tensor KarrasSigmas(int n, double sigma_min, double sigma_max, double rho) {
  // float32 ramp, the 1/rho powers in double, as k-diffusion.
  const at::Tensor ramp = at::linspace(0.0, 1.0, n, at::kFloat);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1 / rho);
  return AppendZero((ramp * (min_inv_rho - max_inv_rho) + max_inv_rho).pow(rho));
}

const std::vector<SchedulerInfo>& AllSchedulers() {
  static const std::vector<SchedulerInfo> kAll = {
      {Scheduler::kAutomatic, "automatic", "Automatic", nullptr, -1, false},
      {Scheduler::kUniform, "uniform", "Uniform", nullptr, -1, true},
      {Scheduler::kKarras, "karras", "Karras", nullptr, 7.0, false},
      {Scheduler::kExponential, "exponential", "Exponential", nullptr, -1, false},
      {Scheduler::kPolyexponential, "polyexponential", "Polyexponential", nullptr, 1.0, false},
      {Scheduler::kSgmUniform, "sgm_uniform", "SGM Uniform", "SGMUniform", -1, true},
      {Scheduler::kKlOptimal, "kl_optimal", "KL Optimal", nullptr, -1, false},
      {Scheduler::kAlignYourSteps, "align_your_steps", "Align Your Steps", nullptr, -1, false},
      {Scheduler::kSimple, "simple", "Simple", nullptr, -1, true},
      {Scheduler::kNormal, "normal", "Normal", nullptr, -1, true},
      {Scheduler::kDdim, "ddim", "DDIM", nullptr, -1, true},
      {Scheduler::kBeta, "beta", "Beta", nullptr, -1, true},
  };
  return kAll;
}

const SchedulerInfo& SchedulerInfoOf(Scheduler scheduler) {
  for (const SchedulerInfo& info : AllSchedulers()) {
    if (info.scheduler == scheduler) return info;
  }
  return AllSchedulers().front();
}

const char* SchedulerName(Scheduler scheduler) { return SchedulerInfoOf(scheduler).name; }
const char* SchedulerLabel(Scheduler scheduler) { return SchedulerInfoOf(scheduler).label; }

absl::StatusOr<Scheduler> ParseScheduler(absl::string_view name) {
  const std::string n = Lower(name);
  std::vector<std::string> labels;
  for (const SchedulerInfo& info : AllSchedulers()) {
    if (n == Lower(info.name) || n == Lower(info.label) || (info.alias != nullptr && n == Lower(info.alias))) {
      return info.scheduler;
    }
    labels.push_back(info.label);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown schedule type ", Quoted(name, "\"", "\""), "; choose one of: ", absl::StrJoin(labels, ", ")));
}

absl::StatusOr<at::Tensor> BuildSigmas(Scheduler scheduler, int steps, const ModelSchedule& model,
                                       const ScheduleOptions& o) {
  if (steps < 1) return absl::InvalidArgumentError(absl::StrCat("steps must be at least 1, got ", steps));
  if (!(o.sigma_min >= 0 && o.sigma_max >= 0 && o.rho >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("sigma_min, sigma_max and rho must be >= 0 (0 = default), got ",
                                                   o.sigma_min, ", ", o.sigma_max, ", ", o.rho));
  }
  const SchedulerInfo& info = SchedulerInfoOf(scheduler);
  if (scheduler == Scheduler::kBeta && !(o.beta_alpha > 0 && o.beta_beta > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("the Beta schedule needs alpha > 0 and beta > 0, got ",
                                                   o.beta_alpha, " and ", o.beta_beta));
  }
  const int n = o.discard_next_to_last_sigma ? steps + 1 : steps;

  // KDiffusionSampler.get_sigmas: an override counts when nonzero and not the model's own value.
  const double m_min = model.sigma_min(), m_max = model.sigma_max();
  double sigma_min = o.use_old_karras_scheduler_sigmas ? 0.1 : m_min;
  double sigma_max = o.use_old_karras_scheduler_sigmas ? 10.0 : m_max;
  if (o.sigma_min != 0 && o.sigma_min != m_min) sigma_min = o.sigma_min;
  if (o.sigma_max != 0 && o.sigma_max != m_max) sigma_max = o.sigma_max;
  const double rho = (info.default_rho != -1 && o.rho != 0) ? o.rho : info.default_rho;

  at::Tensor sigmas;
  switch (scheduler) {
    case Scheduler::kAutomatic:
    case Scheduler::kUniform: sigmas = model.UniformSigmas(n); break;
    case Scheduler::kKarras: sigmas = KarrasSigmas(n, sigma_min, sigma_max, rho); break;
    case Scheduler::kExponential: sigmas = Exponential(n, sigma_min, sigma_max); break;
    case Scheduler::kPolyexponential: sigmas = Polyexponential(n, sigma_min, sigma_max, rho); break;
    case Scheduler::kSgmUniform: sigmas = Normal(n, sigma_min, sigma_max, model, /*sgm=*/true); break;
    case Scheduler::kKlOptimal: sigmas = KlOptimal(n, sigma_min, sigma_max); break;
    case Scheduler::kAlignYourSteps: sigmas = AlignYourSteps(n); break;
    case Scheduler::kSimple: sigmas = Simple(n, model); break;
    case Scheduler::kNormal: sigmas = Normal(n, sigma_min, sigma_max, model, /*sgm=*/false); break;
    case Scheduler::kDdim: sigmas = Ddim(n, model); break;
    case Scheduler::kBeta:
      sigmas = o.beta_dev ? BetaDev(n, sigma_min, sigma_max, model, o.beta_alpha, o.beta_beta)
                          : BetaV1(n, sigma_min, sigma_max, o.beta_alpha, o.beta_beta);
      break;
  }
  if (o.discard_next_to_last_sigma) sigmas = at::cat({sigmas.slice(0, 0, -2), sigmas.slice(0, -1)});
  return sigmas.to(at::kFloat).contiguous();
}

}  // namespace atelier::engine
