#include "engine/sampling/philox.h"

#include <cmath>

namespace atelier::engine {
namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

// rng_philox.philox4_32 with 10 rounds; only outputs 0 and 1 are used (box_muller discards 2 and 3).
inline void Philox10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(c[0]) * kM0;
    const uint64_t p1 = static_cast<uint64_t>(c[2]) * kM1;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
    k0 += kW0, k1 += kW1;  // the key bump after the last round is unused
  }
}

}  // namespace

void PhiloxRandn(uint64_t seed, uint32_t offset, int64_t n, float* out) {
  // rng_philox's constants are float32 arrays; numpy multiplies uint32 by them in float64, and the halves are
  // taken in float32 (exact, a power-of-two division).
  const double a = static_cast<float>(2.3283064e-10);
  const double b = static_cast<float>(2.3283064e-10 * 6.2831855);
  const double a_half = static_cast<float>(static_cast<float>(a) / 2.0f);
  const double b_half = static_cast<float>(static_cast<float>(b) / 2.0f);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t c[4] = {offset, 0, static_cast<uint32_t>(i), 0};
    Philox10(c, k0, k1);
    const double u = c[0] * a + a_half;
    const double v = c[1] * b + b_half;
    out[i] = static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::sin(v));
  }
}

}  // namespace atelier::engine
