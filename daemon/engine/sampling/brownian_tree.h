// Brownian-tree noise for the SDE samplers (k-diffusion's BrownianTreeNoiseSampler): one Brownian motion W per
// image over [sigma_min, sigma_max], seeded by the image's seed, queried as the normalised increment
// (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|). The same (sigma, sigma_next) always gives the same
// noise, and increments over disjoint intervals are independent, whatever the order of queries; so a batch equals
// its images made one by one. (torchsde's tree is not reproduced bit for bit: WebUI's own output depends on it.)
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace atelier::engine {

class BrownianTreeNoise {
 public:
  // image_shape: one image's latent shape [C, H, W]; the result of a query is [seeds.size(), C, H, W] on `device`.
  BrownianTreeNoise(std::vector<int64_t> image_shape, std::vector<uint64_t> seeds, double sigma_min,
                    double sigma_max, at::Device device);

  at::Tensor operator()(double sigma, double sigma_next) const;

 private:
  at::Tensor W(uint64_t seed, double t) const;  // one image's W(t), W(t0) = 0
  const at::Tensor& NodeNormal(uint64_t seed, uint64_t node) const;  // the node's standard normal Z

  std::vector<int64_t> shape_;
  std::vector<uint64_t> seeds_;
  double t0_, t1_;
  at::Device device_;
  mutable std::map<std::pair<uint64_t, double>, at::Tensor> cache_;         // recent W(t) per (seed, t)
  mutable std::map<std::pair<uint64_t, uint64_t>, at::Tensor> node_cache_;  // recent Z per (seed, node)
};

}  // namespace atelier::engine
