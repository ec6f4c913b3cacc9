#include "engine/brownian_tree.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace atelier::engine {
namespace {

// SplitMix64: decorrelates the per-node seeds derived from (image seed, node index).
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

constexpr int kMaxDepth = 48;

}  // namespace

BrownianTreeNoise::BrownianTreeNoise(std::vector<int64_t> image_shape, std::vector<uint64_t> seeds, double sigma_min,
                                     double sigma_max, at::Device device)
    : shape_(std::move(image_shape)),
      seeds_(std::move(seeds)),
      t0_(std::min(sigma_min, sigma_max)),
      t1_(std::max(sigma_min, sigma_max)),
      device_(device) {}

at::Tensor BrownianTreeNoise::Normal(uint64_t seed, uint64_t node) const {
  auto gen = at::detail::createCPUGenerator(Mix(Mix(seed) ^ node));
  return at::randn(shape_, gen, at::TensorOptions().dtype(at::kFloat));
}

at::Tensor BrownianTreeNoise::W(uint64_t seed, double t) const {
  t = std::clamp(t, t0_, t1_);
  // Bisect [a, b] towards t: W(mid) is the Brownian bridge mean plus its own seeded noise.
  double a = t0_, b = t1_;
  at::Tensor wa = at::zeros(shape_, at::TensorOptions().dtype(at::kFloat));
  at::Tensor wb = Normal(seed, 1) * std::sqrt(t1_ - t0_);
  if (t == t0_) return wa;
  if (t == t1_) return wb;
  const double tol = (t1_ - t0_) * 1e-9;
  uint64_t node = 1;
  for (int depth = 0; depth < kMaxDepth; ++depth) {
    const double m = 0.5 * (a + b);
    const at::Tensor wm = (wa + wb) * 0.5 + Normal(seed, 2 * node) * std::sqrt((b - a) / 4);
    if (std::fabs(m - t) <= tol) return wm;
    if (t < m) {
      b = m;
      wb = wm;
      node = 2 * node;
    } else {
      a = m;
      wa = wm;
      node = 2 * node + 1;
    }
  }
  // Below the resolution: the bridge mean between the bracketing points.
  const double f = (t - a) / (b - a);
  return wa * (1 - f) + wb * f;
}

at::Tensor BrownianTreeNoise::operator()(double sigma, double sigma_next) const {
  const double scale = 1 / std::sqrt(std::fabs(sigma_next - sigma));
  std::vector<at::Tensor> rows;
  rows.reserve(seeds_.size());
  for (uint64_t seed : seeds_) rows.push_back((W(seed, sigma_next) - W(seed, sigma)) * scale);
  return at::stack(rows, 0).to(device_);
}

}  // namespace atelier::engine
