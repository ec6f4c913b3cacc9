// The two passes of a channels-last GroupNorm (optionally followed by SiLU) as AVX-512 loops, for float32 and
// bfloat16 activations with float32 arithmetic. This header has no libtorch types; group_norm_avx512.cc is the only
// file built with AVX-512 flags and is called only where the CPU has AVX-512 F/BW/VL/DQ (nn_layers.cc checks).
#pragma once

#include <cstdint>

namespace atelier::engine::avx512 {

// Per-channel sums and sums of squares of rows [begin, end) of x ([rows, channels], channels % 16 == 0), added
// into sum[channels] and sumsq[channels] (float32 over at most a few hundred rows; callers combine in double).
void ChannelSums(const void* x, bool bf16, std::int64_t channels, std::int64_t begin, std::int64_t end, float* sum,
                 float* sumsq);

// y = x * scale[c] + shift[c] (then y * sigmoid(y) when `silu`) for rows [begin, end), same layout, in place allowed.
void ScaleShift(const void* x, void* y, bool bf16, std::int64_t channels, std::int64_t begin, std::int64_t end,
                const float* scale, const float* shift, bool silu);

}  // namespace atelier::engine::avx512
