#include "random_weights.h"

#include <cmath>

#include <ATen/ATen.h>

namespace atelier::bench {

engine::WeightMap RandomWeights(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  at::manual_seed(0);
  engine::WeightMap weights;
  for (const auto& [name, shape] : shapes) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    // 1-D weights are norm scales (GroupNorm/LayerNorm, whatever their names: "out.0", "in_layers.0"): about 1.
    const bool is_weight = name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0;
    if (shape.size() == 1) {
      weights[name] = is_weight ? 1 + 0.1 * at::randn(shape) : 0.1 * at::randn(shape);
    } else {
      weights[name] = at::randn(shape) / std::sqrt(static_cast<double>(fan_in));
    }
  }
  return weights;
}

}  // namespace atelier::bench
