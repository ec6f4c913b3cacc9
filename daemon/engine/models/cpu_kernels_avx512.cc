#include "engine/models/cpu_kernels_avx512.h"

#ifdef __AVX512F__  // built with AVX-512 flags on x86-64 (daemon/CMakeLists.txt); elsewhere never called
#include <immintrin.h>

#include <cmath>

namespace atelier::engine::avx512 {
namespace {

inline __m512 Load(const void* base, bool bf16, std::int64_t index) {
  if (bf16) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const std::uint16_t*>(base) + index));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  return _mm512_loadu_ps(static_cast<const float*>(base) + index);
}

inline void Store(void* base, bool bf16, std::int64_t index, __m512 v) {
  if (bf16) {  // round to nearest even, as libtorch's float -> bfloat16 conversion
    __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<std::uint16_t*>(base) + index),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
    return;
  }
  _mm512_storeu_ps(static_cast<float*>(base) + index, v);
}

// exp(x) to about 2 ulp: x = k ln2 + r, |r| <= ln2/2, a degree-6 Taylor polynomial of exp(r), scaled by 2^k.
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);  // ln2 split in two for accuracy
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), odd in x.
inline __m512 Erf(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(ax, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = Exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax));
  const __m512 y = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
  // Copy x's sign onto y.
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

}  // namespace

void ChannelSums(const void* x, bool bf16, std::int64_t channels, std::int64_t begin, std::int64_t end, float* sum,
                 float* sumsq) {
  for (std::int64_t c = 0; c < channels; c += 16) {
    __m512 s = _mm512_setzero_ps(), q = _mm512_setzero_ps();
    for (std::int64_t row = begin; row < end; ++row) {
      const __m512 v = Load(x, bf16, row * channels + c);
      s = _mm512_add_ps(s, v);
      q = _mm512_fmadd_ps(v, v, q);
    }
    _mm512_storeu_ps(sum + c, _mm512_add_ps(_mm512_loadu_ps(sum + c), s));
    _mm512_storeu_ps(sumsq + c, _mm512_add_ps(_mm512_loadu_ps(sumsq + c), q));
  }
}

void ScaleShift(const void* x, void* y, bool bf16, std::int64_t channels, std::int64_t begin, std::int64_t end,
                const float* scale, const float* shift, bool silu) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (std::int64_t row = begin; row < end; ++row) {
    for (std::int64_t c = 0; c < channels; c += 16) {
      const std::int64_t i = row * channels + c;
      __m512 v = _mm512_fmadd_ps(Load(x, bf16, i), _mm512_loadu_ps(scale + c), _mm512_loadu_ps(shift + c));
      if (silu) v = _mm512_div_ps(v, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), v))));
      Store(y, bf16, i, v);
    }
  }
}

void LayerNormRows(const void* x, void* y, bool bf16, std::int64_t channels, std::int64_t begin, std::int64_t end,
                   const float* weight, const float* bias, float eps) {
  const float inv = 1.0f / static_cast<float>(channels);
  for (std::int64_t row = begin; row < end; ++row) {
    const std::int64_t base = row * channels;
    __m512 s = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < channels; c += 16) s = _mm512_add_ps(s, Load(x, bf16, base + c));
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(s) * inv);
    __m512 q = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < channels; c += 16) {
      const __m512 d = _mm512_sub_ps(Load(x, bf16, base + c), mean);
      q = _mm512_fmadd_ps(d, d, q);
    }
    const __m512 rstd = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(q) * inv + eps));
    for (std::int64_t c = 0; c < channels; c += 16) {
      const __m512 d = _mm512_mul_ps(_mm512_sub_ps(Load(x, bf16, base + c), mean), rstd);
      Store(y, bf16, base + c, _mm512_fmadd_ps(d, _mm512_loadu_ps(weight + c), _mm512_loadu_ps(bias + c)));
    }
  }
}

void GegluRows(const void* x, void* y, bool bf16, std::int64_t width, std::int64_t begin, std::int64_t end) {
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), rsqrt2 = _mm512_set1_ps(0.70710678118654752f);
  for (std::int64_t row = begin; row < end; ++row) {
    for (std::int64_t j = 0; j < width; j += 16) {
      const __m512 a = Load(x, bf16, row * 2 * width + j);
      const __m512 g = Load(x, bf16, row * 2 * width + width + j);
      const __m512 gelu = _mm512_mul_ps(_mm512_mul_ps(half, g), _mm512_add_ps(one, Erf(_mm512_mul_ps(g, rsqrt2))));
      Store(y, bf16, row * width + j, _mm512_mul_ps(a, gelu));
    }
  }
}

}  // namespace atelier::engine::avx512
#else
namespace atelier::engine::avx512 {
void ChannelSums(const void*, bool, std::int64_t, std::int64_t, std::int64_t, float*, float*) {}
void ScaleShift(const void*, void*, bool, std::int64_t, std::int64_t, std::int64_t, const float*, const float*, bool) {}
void LayerNormRows(const void*, void*, bool, std::int64_t, std::int64_t, std::int64_t, const float*, const float*, float) {}
void GegluRows(const void*, void*, bool, std::int64_t, std::int64_t, std::int64_t) {}
}  // namespace atelier::engine::avx512
#endif
