// Random weights for the benchmarks' models, scaled so activations stay finite through a full-size network.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/models/checkpoint_loader.h"

namespace atelier::bench {

// N(0, 1/fan_in) for matrices and kernels; 1-D weights (norm scales) about 1, 1-D biases about 0. Seeded: the
// same shapes give the same weights.
engine::WeightMap RandomWeights(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes);

}  // namespace atelier::bench
