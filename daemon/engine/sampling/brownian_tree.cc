#include "engine/sampling/brownian_tree.h"

#include <algorithm>
#include <cmath>
#include <map>
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

constexpr int kMaxDepth = 40;
// Bisection stops within this fraction of [sigma_min, sigma_max] of the queried point (2^-20); below it W is
// interpolated, which lowers an increment's variance by at most width / (4 * increment): < 0.05% for increments
// down to 0.01 on SD's [0.03, 14.6].
constexpr double kRelativeResolution = 1.0 / (1 << 20);

}  // namespace

BrownianTreeNoise::BrownianTreeNoise(std::vector<int64_t> image_shape, std::vector<uint64_t> seeds, double sigma_min,
                                     double sigma_max, at::Device device)
    : shape_(std::move(image_shape)),
      seeds_(std::move(seeds)),
      t0_(std::min(sigma_min, sigma_max)),
      t1_(std::max(sigma_min, sigma_max)),
      device_(device) {}

const at::Tensor& BrownianTreeNoise::NodeNormal(uint64_t seed, uint64_t node) const {
  const auto key = std::make_pair(seed, node);
  if (auto it = node_cache_.find(key); it != node_cache_.end()) return it->second;
  // Nearby query points share their upper nodes: keep a few paths' worth (bounded memory).
  if (node_cache_.size() >= 64 * seeds_.size()) node_cache_.clear();
  auto gen = at::detail::createCPUGenerator(Mix(Mix(seed) ^ node));
  at::Tensor z = at::empty(shape_, at::TensorOptions().dtype(at::kFloat));
  z.normal_(0, 1, gen);
  return node_cache_.emplace(key, std::move(z)).first->second;
}

at::Tensor BrownianTreeNoise::W(uint64_t seed, double t) const {
  t = std::clamp(t, t0_, t1_);
  const auto key = std::make_pair(seed, t);
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;

  // Bisect [a, b] towards t: W(mid) = (W(a) + W(b)) / 2 + sqrt((b - a) / 4) * Z_node. Every W is a linear
  // combination of the nodes' standard normals Z, tracked as coefficients, so tensors are made only at the end.
  using Combination = std::map<uint64_t, double>;  // node -> coefficient
  Combination wa, wb{{1, std::sqrt(t1_ - t0_)}}, w;
  double a = t0_, b = t1_;
  if (t == t1_) {
    w = wb;
  } else if (t != t0_) {
    const double tol = (t1_ - t0_) * kRelativeResolution;
    uint64_t node = 1;
    bool found = false;
    for (int depth = 0; depth < kMaxDepth && !found; ++depth) {
      const double m = 0.5 * (a + b);
      Combination wm;
      for (const auto& [n, c] : wa) wm[n] += 0.5 * c;
      for (const auto& [n, c] : wb) wm[n] += 0.5 * c;
      wm[2 * node] += std::sqrt((b - a) / 4);
      if (std::fabs(m - t) <= tol) {
        w = std::move(wm);
        found = true;
      } else if (t < m) {
        b = m;
        wb = std::move(wm);
        node = 2 * node;
      } else {
        a = m;
        wa = std::move(wm);
        node = 2 * node + 1;
      }
    }
    if (!found) {  // below the resolution: the bridge mean between the bracketing points
      const double f = (t - a) / (b - a);
      for (const auto& [n, c] : wa) w[n] += (1 - f) * c;
      for (const auto& [n, c] : wb) w[n] += f * c;
    }
  }

  // Accumulated in a plain loop: ~20 small tensors, where per-op dispatch would cost more than the arithmetic.
  at::Tensor result = at::zeros(shape_, at::TensorOptions().dtype(at::kFloat));
  float* out = result.data_ptr<float>();
  const int64_t n = result.numel();
  for (const auto& [node, coefficient] : w) {
    const float* z = NodeNormal(seed, node).data_ptr<float>();
    const float c = static_cast<float>(coefficient);
    for (int64_t j = 0; j < n; ++j) out[j] += c * z[j];
  }
  // Consecutive steps share an end point: keep the recent values.
  if (cache_.size() >= 8 * seeds_.size()) cache_.clear();
  cache_.emplace(key, result);
  return result;
}

at::Tensor BrownianTreeNoise::operator()(double sigma, double sigma_next) const {
  const double scale = 1 / std::sqrt(std::fabs(sigma_next - sigma));
  std::vector<at::Tensor> rows;
  rows.reserve(seeds_.size());
  for (uint64_t seed : seeds_) rows.push_back((W(seed, sigma_next) - W(seed, sigma)) * scale);
  return at::stack(rows, 0).to(device_);
}

}  // namespace atelier::engine
