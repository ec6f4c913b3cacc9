// WebUI's numpy emulation of CUDA torch.randn (modules/rng_philox.py): Philox4x32-10 counters turned into normal
// samples by one Box-Muller branch, computed in float64 the way numpy promotes it and rounded to float32.
#pragma once

#include <cstdint>

namespace atelier::engine {

// The `offset`-th randn call of rng_philox.Generator(seed) for n elements: element k uses counter
// (offset, 0, k, 0) and key (seed low 32 bits, seed high 32 bits). n must be below 2^32.
void PhiloxRandn(uint64_t seed, uint32_t offset, int64_t n, float* out);

}  // namespace atelier::engine
