#include "jobs/job_cost.h"

#include <algorithm>
#include <cmath>

#include "engine/pipeline/hires_fix.h"
#include "engine/text/prompt_parser.h"
#include "util/limits.h"

namespace atelier::jobs {
namespace {

// The FLOP-count prior for sampling's two terms: SD1.5's self-attention costs about a quarter of a step at its
// 64x64 latent (4096 pixels), i.e. attention per pixel² ≈ conv per pixel / 16384.
constexpr double kAttentionPixels = 16384.0;
// The priors' weights in the fit, in observations: small, so that a few shapes outweigh them.
constexpr double kPriorWeight = 1e-3;
constexpr double kCallPriorWeight = 1e-3;
// The weight of the newest observation in the text and VAE rates (an exponential average).
constexpr double kRateUpdate = 0.3;

// A second-order sampler calls the model twice per step, except on its last step (to sigma 0), a plain Euler step.
int ModelCalls(const engine::SamplingSettings& s, int steps) {
  const bool second_order = s.choice.sampler != nullptr && s.choice.sampler->second_order;
  return second_order ? std::max(1, 2 * steps - 1) : steps;
}

// img2img (and hires fix's second pass) starts t_enc steps into the schedule and runs t_enc + 1 steps.
int Img2ImgCalls(const engine::SamplingSettings& s) { return engine::Img2ImgSteps(s).second + 1; }

void AddPass(JobWork& work, double calls, double rows, double latent_pixels) {
  work.calls += calls;
  work.conv += calls * rows * latent_pixels;
  work.attention += calls * rows * latent_pixels * latent_pixels;
}

double Ema(double rate, double observed) {
  return rate <= 0 ? observed : (1 - kRateUpdate) * rate + kRateUpdate * observed;
}

}  // namespace

JobWork EstimateWork(const JobSettings& settings) {
  const engine::GenerationParams& p = settings.params;
  const engine::SamplingSettings& s = p.sampling;
  JobWork work;
  // Rows per model call: every AND part of the prompt for each image, plus its unconditional row.
  const double and_parts = std::max<size_t>(1, engine::GetMulticondPromptList(p.prompt).size());
  const double rows = p.batch_size * (and_parts + 1.0);
  const double images = static_cast<double>(p.batch_size) * p.n_iter;
  const double latent = (p.width / 8.0) * (p.height / 8.0);
  int steps = s.steps;
  if (settings.img2img) steps = Img2ImgCalls(s);
  AddPass(work, static_cast<double>(p.n_iter) * ModelCalls(s, steps), rows, latent);
  work.text = p.n_iter * (and_parts + 1.0);
  if (settings.img2img) work.vae += images * latent;  // the init image's encode
  double decoded = latent;
  if (p.hires.enabled) {
    auto target = engine::HiresTargetSize(p.width, p.height, p.hires, kMaxImageSide);
    if (target.ok()) {
      const double hr_latent = (target->width / 8.0) * (target->height / 8.0);
      engine::SamplingSettings second = s;
      if (p.hires.sampler) second.choice = *p.hires.sampler;
      if (p.hires.second_pass_steps > 0) second.steps = p.hires.second_pass_steps;
      second.img2img_fix_steps = true;
      const int hr_steps = Img2ImgCalls(second);
      AddPass(work, static_cast<double>(p.n_iter) * ModelCalls(second, hr_steps), rows, hr_latent);
      if (!p.hires.prompt.empty() || !p.hires.negative_prompt.empty()) work.text *= 2;
      auto upscaler = engine::FindHiresUpscaler(p.hires.upscaler.empty() ? "Latent" : p.hires.upscaler);
      // An image-space upscaler decodes the first pass and encodes the resized image (the encoder is the lighter).
      if (upscaler.ok() && upscaler->kind == engine::HiresUpscaleKind::kImage) work.vae += images * latent * 1.5;
      decoded = hr_latent;
    }
  }
  work.vae += images * decoded;
  return work;
}

std::optional<double> CostModel::EstimateSeconds(const JobWork& work, const void* model) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (sample_count_ == 0 || model != model_) return std::nullopt;
  return work.text * rates_.text + work.calls * rates_.call + work.conv * rates_.conv + work.attention * rates_.attention +
         work.vae * rates_.vae;
}

void CostModel::Observe(const JobWork& work, const StageSeconds& seconds, const void* model) {
  std::lock_guard<std::mutex> lock(mu_);
  if (model != model_) {
    model_ = model;
    rates_ = Rates();
    sample_count_ = 0;
  }
  if (work.text > 0 && seconds.text > 0) rates_.text = Ema(rates_.text, seconds.text / work.text);
  if (work.vae > 0 && seconds.vae > 0) rates_.vae = Ema(rates_.vae, seconds.vae / work.vae);
  if (work.conv > 0 && seconds.sampling > 0) {
    samples_[sample_count_ % kWindow] = Sample{work.calls, work.conv, work.attention, seconds.sampling};
    ++sample_count_;
    FitSampling();
  }
}

CostModel::Rates CostModel::rates() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rates_;
}

namespace {

// Solves the n x n system m·x = r (n <= 3) by Gaussian elimination with partial pivoting; false if singular.
template <int N>
bool SolveLinear(double (&m)[N][N], double (&r)[N], double (&x)[N]) {
  for (int col = 0; col < N; ++col) {
    int pivot = col;
    for (int row = col + 1; row < N; ++row) {
      if (std::abs(m[row][col]) > std::abs(m[pivot][col])) pivot = row;
    }
    if (std::abs(m[pivot][col]) < 1e-12) return false;
    std::swap(m[col], m[pivot]);
    std::swap(r[col], r[pivot]);
    for (int row = col + 1; row < N; ++row) {
      const double f = m[row][col] / m[col][col];
      for (int k = col; k < N; ++k) m[row][k] -= f * m[col][k];
      r[row] -= f * r[col];
    }
  }
  for (int row = N - 1; row >= 0; --row) {
    double v = r[row];
    for (int k = row + 1; k < N; ++k) v -= m[row][k] * x[k];
    x[row] = v / m[row][row];
  }
  return true;
}

}  // namespace

// Sampling seconds t ≈ a·conv + b·attention + c·calls, fitted on relative error (a 2 s job counts as much as a
// 200 s one): minimise Σ (a·x + b·y + c·z − 1)² with x = conv/t, y = attention/t, z = calls/t, in units where each
// feature has RMS 1, plus kPriorWeight·(b − a/kAttentionPixels)² and kCallPriorWeight·c². One shape alone cannot
// separate the terms: the priors decide, and more shapes overrule them. A negative solution drops the per-call
// term, then falls back to the attention prior's ratio with one fitted scale.
void CostModel::FitSampling() {
  const std::size_t n = std::min(sample_count_, kWindow);
  // Features per sample, over seconds: conv, attention, calls.
  double norm[3] = {0, 0, 0};
  for (std::size_t i = 0; i < n; ++i) {
    const double f[3] = {samples_[i].conv, samples_[i].attention, samples_[i].calls};
    for (int k = 0; k < 3; ++k) norm[k] += (f[k] / samples_[i].seconds) * (f[k] / samples_[i].seconds);
  }
  for (double& v : norm) v = std::sqrt(v / n);
  auto fit = [&](bool with_calls, double (&w)[3]) {
    if (!(norm[0] > 0 && norm[1] > 0 && norm[2] > 0)) return false;
    double m[3][3] = {}, r[3] = {}, u[3] = {};
    for (std::size_t i = 0; i < n; ++i) {
      const double f[3] = {samples_[i].conv / samples_[i].seconds / norm[0],
                           samples_[i].attention / samples_[i].seconds / norm[1],
                           samples_[i].calls / samples_[i].seconds / norm[2]};
      for (int j = 0; j < 3; ++j) {
        r[j] += f[j];
        for (int k = 0; k < 3; ++k) m[j][k] += f[j] * f[k];
      }
    }
    // The attention prior: the row (−q, 1, 0)/|(−q, 1)| with q = norm_attention / (K·norm_conv).
    const double q = norm[1] / (kAttentionPixels * norm[0]);
    const double pw = kPriorWeight / (1 + q * q);
    m[0][0] += pw * q * q, m[0][1] -= pw * q, m[1][0] -= pw * q, m[1][1] += pw;
    // Without the per-call term its unknown is pinned to 0.
    m[2][2] += with_calls ? kCallPriorWeight : 1e12;
    if (!SolveLinear<3>(m, r, u)) return false;
    for (int k = 0; k < 3; ++k) w[k] = u[k] / norm[k];
    return w[0] > 0 && w[1] >= 0 && w[2] >= 0;
  };
  double w[3] = {0, 0, 0};
  if (!fit(true, w) && !fit(false, w)) {
    // t ≈ a·(x + y/K): one scale on the prior's ratio.
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double z = (samples_[i].conv + samples_[i].attention / kAttentionPixels) / samples_[i].seconds;
      num += z, den += z * z;
    }
    w[0] = den > 0 ? num / den : 0;
    w[1] = w[0] / kAttentionPixels;
    w[2] = 0;
  }
  rates_.conv = w[0];
  rates_.attention = w[1];
  rates_.call = std::abs(w[2]) < 1e-300 ? 0 : w[2];
}

}  // namespace atelier::jobs
