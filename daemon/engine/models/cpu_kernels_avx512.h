// Fused CPU kernels as AVX-512 loops, for float32 and bfloat16 activations with float32 arithmetic: the two passes
// of a channels-last GroupNorm (optionally followed by SiLU), LayerNorm rows, and GEGLU. This header has no libtorch
// types; cpu_kernels_avx512.cc is the only file built with AVX-512 flags and is called only where the CPU has
// AVX-512 F/BW/VL/DQ (nn_layers.cc checks). Every `channels` / width is a multiple of 16.
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

// LayerNorm of rows [begin, end) of x [rows, channels] into y (same layout): two passes over each row, float32.
void LayerNormRows(const void* x, void* y, bool bf16, std::int64_t channels, std::int64_t begin, std::int64_t end,
                   const float* weight, const float* bias, float eps);

// GEGLU of rows [begin, end): y[r, j] = x[r, j] * gelu(x[r, width + j]) for x [rows, 2 * width], y [rows, width];
// gelu with erf (torch's default), erf to about 2e-7.
void GegluRows(const void* x, void* y, bool bf16, std::int64_t width, std::int64_t begin, std::int64_t end);

}  // namespace atelier::engine::avx512
