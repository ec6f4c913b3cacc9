#include "jobs/job_cost.h"

#include <algorithm>

#include "engine/pipeline/hires_fix.h"
#include "engine/text/prompt_parser.h"
#include "util/limits.h"

namespace atelier::jobs {
namespace {

// One UNet row at `latent_pixels`: convolutions grow with the pixels, self-attention with their square (its share
// at SD's 64x64 latent is about a quarter of the step: 4096 pixels x 4096 / kAttentionPixels).
constexpr double kAttentionPixels = 16384.0;
double UNetRow(double latent_pixels) { return latent_pixels * (1.0 + latent_pixels / kAttentionPixels); }

// The VAE decode of one image costs about this many UNet rows at the same latent size (SD1.5: ~1.2 TFLOP per
// 512x512 decode vs ~0.09 TFLOP per UNet row).
constexpr double kDecodeRows = 12.0;

int ModelCalls(const engine::SamplingSettings& s, int steps) {
  return steps * (s.choice.sampler != nullptr && s.choice.sampler->second_order ? 2 : 1);
}

}  // namespace

double EstimateWork(const JobSettings& settings) {
  const engine::GenerationParams& p = settings.params;
  const engine::SamplingSettings& s = p.sampling;
  // Rows per model call: every AND part of the prompt for each image, plus its unconditional row.
  const double and_parts = std::max<size_t>(1, engine::GetMulticondPromptList(p.prompt).size());
  const double rows = p.batch_size * (and_parts + 1.0);
  const double images = static_cast<double>(p.batch_size) * p.n_iter;
  const double latent = (p.width / 8.0) * (p.height / 8.0);
  int steps = s.steps;
  if (settings.img2img) steps = std::max(1, engine::Img2ImgSteps(s).second);
  double work = p.n_iter * ModelCalls(s, steps) * rows * UNetRow(latent);
  double decoded = latent;
  if (p.hires.enabled) {
    auto target = engine::HiresTargetSize(p.width, p.height, p.hires, kMaxImageSide);
    if (target.ok()) {
      const double hr_latent = (target->width / 8.0) * (target->height / 8.0);
      engine::SamplingSettings second = s;
      if (p.hires.sampler) second.choice = *p.hires.sampler;
      if (p.hires.second_pass_steps > 0) second.steps = p.hires.second_pass_steps;
      second.img2img_fix_steps = true;
      const int hr_steps = std::max(1, engine::Img2ImgSteps(second).second);
      work += p.n_iter * ModelCalls(second, hr_steps) * rows * UNetRow(hr_latent);
      decoded = hr_latent;
    }
  }
  return work + images * kDecodeRows * UNetRow(decoded);
}

std::optional<double> CostModel::EstimateSeconds(double work) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (seconds_per_unit_ <= 0) return std::nullopt;
  return work * seconds_per_unit_;
}

void CostModel::Observe(double work, double seconds) {
  if (!(work > 0) || !(seconds > 0)) return;
  std::lock_guard<std::mutex> lock(mu_);
  const double rate = seconds / work;
  seconds_per_unit_ = seconds_per_unit_ <= 0 ? rate : 0.7 * seconds_per_unit_ + 0.3 * rate;
}

}  // namespace atelier::jobs
