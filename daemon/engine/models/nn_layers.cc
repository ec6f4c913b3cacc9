#include "engine/models/nn_layers.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/models/cpu_kernels_avx512.h"
#include "engine/models/runtime.h"

namespace atelier::engine {

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool with_bias)
    : stride_(stride), padding_(padding) {
  weight = register_parameter("weight", at::empty({out, in, kernel, kernel}), false);
  if (with_bias) bias = register_parameter("bias", at::empty({out}), false);
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) const {
  return at::conv2d(x, weight, bias, {stride_, stride_}, {padding_, padding_});
}

at::Tensor Conv2dImpl::ForwardUpsampled2x(const at::Tensor& x) const {
  if (!x.is_cpu() || x.dim() != 4 || weight.size(2) != 3 || stride_ != 1 || padding_ != 1) {
    return forward(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
  }
  at::Tensor taps[2][2];
  {
    std::lock_guard<std::mutex> lock(upsample_taps_->mu);
    UpsampleTaps& cached = *upsample_taps_;
    if (cached.data != weight.data_ptr() || cached.version != weight._version() ||
        cached.dtype != weight.scalar_type()) {
      // Output row 2i + a reads upsampled rows 2i + a - 1 .. 2i + a + 1, i.e. source rows i - 1, i, i (a = 0) or
      // i, i, i + 1 (a = 1): the 3 kernel rows fold into 2 as [w0, w1 + w2] or [w0 + w1, w2]; columns likewise.
      const at::Tensor fold[2] = {at::tensor({1.f, 0.f, 0.f, 0.f, 1.f, 1.f}).view({2, 3}),
                                  at::tensor({1.f, 1.f, 0.f, 0.f, 0.f, 1.f}).view({2, 3})};
      const at::Tensor w = weight.to(at::kFloat);
      for (int a = 0; a < 2; ++a) {
        for (int b = 0; b < 2; ++b) {
          cached.taps[a][b] = at::matmul(at::matmul(fold[a], w), fold[b].t())
                                  .to(weight.scalar_type())
                                  .contiguous(weight.suggest_memory_format());
        }
      }
      cached.data = weight.data_ptr();
      cached.version = weight._version();
      cached.dtype = weight.scalar_type();
    }
    for (int a = 0; a < 2; ++a) {
      for (int b = 0; b < 2; ++b) taps[a][b] = cached.taps[a][b];
    }
  }
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), c = weight.size(0);
  at::Tensor out;
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      // Padding 1 gives (h + 1) x (w + 1) outputs; output row r reads source rows r - 1 and r, so parity a takes
      // rows a .. a + h - 1 (columns likewise).
      const at::Tensor part = at::conv2d(x, taps[a][b], bias, {1, 1}, {1, 1});
      if (!out.defined()) {
        out = at::empty({n, c, 2 * h, 2 * w}, part.options().memory_format(part.suggest_memory_format()));
      }
      // [n, c, 2h, 2w] viewed as [n, c, h, 2, w, 2] (splitting a dimension is a view in any layout).
      out.view({n, c, h, 2, w, 2}).select(5, b).select(3, a).copy_(part.slice(2, a, a + h).slice(3, b, b + w));
    }
  }
  return out;
}

at::Tensor Conv2dImpl::ForwardTokens(const at::Tensor& tokens) const {
  TORCH_CHECK(weight.size(2) == 1 && weight.size(3) == 1 && stride_ == 1 && padding_ == 0,
              "ForwardTokens needs a 1x1 convolution");
  return at::linear(tokens, weight.view({weight.size(0), weight.size(1)}), bias);
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", at::empty({out, in}), false);
  if (with_bias) bias = register_parameter("bias", at::empty({out}), false);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }

namespace {
thread_local GroupNormStats* active_stats = nullptr;

// GroupNorm with statistics from `stats` (recorded now, or replayed). x is float32 [rows, C, ...].
at::Tensor GroupNormWithStats(const at::Tensor& x, int64_t groups, const at::Tensor& w, const at::Tensor& b, double eps,
                              GroupNormStats& stats) {
  const int64_t rows = x.size(0), channels = x.size(1);
  const at::Tensor grouped = x.reshape({rows, groups, -1});
  at::Tensor mean, rstd;
  if (stats.recording) {
    auto [var, m] = at::var_mean(grouped, {2}, /*unbiased=*/false, /*keepdim=*/false);
    mean = m;
    rstd = at::rsqrt(var + eps);
    stats.mean_rstd.emplace_back(mean, rstd);
  } else {
    TORCH_CHECK(stats.next < stats.mean_rstd.size(), "GroupNorm statistics replay ran past the recording");
    std::tie(mean, rstd) = stats.mean_rstd[stats.next++];
    TORCH_CHECK(mean.size(0) == rows && mean.size(1) == groups, "GroupNorm statistics replay: shape mismatch");
  }
  std::vector<int64_t> shape = {rows, groups, 1};
  const at::Tensor y = (grouped - mean.view(shape)) * rstd.view(shape);
  std::vector<int64_t> affine(static_cast<size_t>(x.dim()), 1);
  affine[1] = channels;
  return y.view(x.sizes()) * w.view(affine) + b.view(affine);
}
}  // namespace

GroupNormStatsScope::GroupNormStatsScope(GroupNormStats* stats) : previous_(active_stats) { active_stats = stats; }
GroupNormStatsScope::~GroupNormStatsScope() { active_stats = previous_; }

GroupNormImpl::GroupNormImpl(int64_t channels, double eps, int64_t groups) : groups_(groups), eps_(eps) {
  weight = register_parameter("weight", at::empty({channels}), false);
  bias = register_parameter("bias", at::empty({channels}), false);
}

namespace {

bool CpuHasAvx512() {
  static const bool has = [] {
    const CpuFeatures cpu = DetectCpuFeatures();
    return cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq;
  }();
  return has;
}

// GroupNorm (+ SiLU) of a channels-last activation: `items` normalisation units (images, or videos of `frames`
// images), each `rows` consecutive rows of `channels` values. Undefined when the kernel does not apply.
at::Tensor FusedGroupNorm(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                          double eps, int64_t frames, bool silu) {
  const int64_t channels = x.dim() == 4 ? x.size(1) : 0;
  if (!CpuHasAvx512() || !x.is_cpu() || x.dim() != 4 || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) ||
      !x.is_contiguous(at::MemoryFormat::ChannelsLast) || channels % 16 != 0 || channels % groups != 0 ||
      x.numel() == 0 || (frames > 0 && x.size(0) % frames != 0)) {
    return {};
  }
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const int64_t items = frames > 0 ? x.size(0) / frames : x.size(0);
  const int64_t rows = x.numel() / (items * channels);
  constexpr int64_t kChunkRows = 128;
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const at::Tensor w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  std::vector<float> partial(static_cast<size_t>(items * chunks * 2 * channels), 0.0f);
  const void* in = x.data_ptr();
  at::parallel_for(0, items * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t first = (i / chunks) * rows + (i % chunks) * kChunkRows;
      const int64_t last = std::min(first + kChunkRows, (i / chunks + 1) * rows);
      float* sums = partial.data() + i * 2 * channels;
      avx512::ChannelSums(in, bf16, channels, first, last, sums, sums + channels);
    }
  });
  // Per item and group: mean and 1/std in double, folded with the affine weights into one scale and shift per
  // channel.
  const int64_t per_group = channels / groups;
  std::vector<float> scale(static_cast<size_t>(items * channels)), shift(scale.size());
  for (int64_t item = 0; item < items; ++item) {
    for (int64_t g = 0; g < groups; ++g) {
      double s = 0, q = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const float* sums = partial.data() + (item * chunks + chunk) * 2 * channels;
        for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
          s += sums[c];
          q += sums[channels + c];
        }
      }
      const double count = static_cast<double>(rows * per_group);
      const double mean = s / count;
      const double rstd = 1.0 / std::sqrt(std::max(q / count - mean * mean, 0.0) + eps);
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        scale[item * channels + c] = static_cast<float>(rstd * wp[c]);
        shift[item * channels + c] = static_cast<float>(bp[c] - mean * rstd * wp[c]);
      }
    }
  }
  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  void* out = y.data_ptr();
  at::parallel_for(0, items * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t item = i / chunks;
      const int64_t first = item * rows + (i % chunks) * kChunkRows;
      const int64_t last = std::min(first + kChunkRows, (item + 1) * rows);
      avx512::ScaleShift(in, out, bf16, channels, first, last, scale.data() + item * channels,
                         shift.data() + item * channels, silu);
    }
  });
  return y;
}

// Rows of `x` (the last dim `width`, contiguous, float32 / bfloat16) for the row kernels; 0 when they do not apply.
int64_t KernelRows(const at::Tensor& x, int64_t width) {
  if (!CpuHasAvx512() || !x.is_cpu() || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) ||
      !x.is_contiguous() || x.dim() == 0 || width % 16 != 0 || width == 0 || x.numel() == 0) {
    return 0;
  }
  return x.numel() / x.size(-1);
}

}  // namespace

at::Tensor Geglu(const at::Tensor& projection) {
  const int64_t width = projection.dim() > 0 ? projection.size(-1) / 2 : 0;
  if (const int64_t rows = KernelRows(projection, width); rows > 0 && projection.size(-1) == 2 * width) {
    std::vector<int64_t> sizes(projection.sizes().begin(), projection.sizes().end());
    sizes.back() = width;
    at::Tensor out = at::empty(sizes, projection.options());
    const bool bf16 = projection.scalar_type() == at::kBFloat16;
    const void* in = projection.data_ptr();
    void* dest = out.data_ptr();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) { avx512::GegluRows(in, dest, bf16, width, begin, end); });
    return out;
  }
  const auto parts = projection.chunk(2, -1);
  return parts[0] * at::gelu(parts[1]);
}

at::Tensor GroupNormImpl::forward(const at::Tensor& x, int64_t frames, bool silu) const {
  if (active_stats == nullptr) {
    if (at::Tensor fused = FusedGroupNorm(x, groups_, weight, bias, eps_, frames, silu); fused.defined()) return fused;
  }
  const bool upcast = x.scalar_type() != at::kFloat;
  at::Tensor h = upcast ? x.to(at::kFloat) : x;
  const at::Tensor w = weight.scalar_type() == at::kFloat ? weight : weight.to(at::kFloat);
  const at::Tensor b = bias.scalar_type() == at::kFloat ? bias : bias.to(at::kFloat);
  if (active_stats != nullptr) {
    h = GroupNormWithStats(h.contiguous(), groups_, w, b, eps_, *active_stats);
  } else if (frames > 0 && x.dim() == 4 && x.size(0) % frames == 0) {
    const int64_t videos = x.size(0) / frames, c = x.size(1), height = x.size(2), width = x.size(3);
    h = h.reshape({videos, frames, c, height, width}).permute({0, 2, 1, 3, 4});
    h = at::group_norm(h, groups_, w, b, eps_).permute({0, 2, 1, 3, 4}).reshape({videos * frames, c, height, width});
  } else {
    h = at::group_norm(h, groups_, w, b, eps_);
  }
  if (silu) h = at::silu(h);
  return upcast ? h.to(x.scalar_type()) : h;
}

LayerNormImpl::LayerNormImpl(int64_t channels, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::empty({channels}), false);
  bias = register_parameter("bias", at::empty({channels}), false);
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) const {
  const int64_t channels = weight.size(0);
  if (const int64_t rows = KernelRows(x, channels); rows > 0 && x.size(-1) == channels) {
    const at::Tensor w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
    at::Tensor out = at::empty_like(x);
    const bool bf16 = x.scalar_type() == at::kBFloat16;
    const void* in = x.data_ptr();
    void* dest = out.data_ptr();
    const float* wp = w.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    const auto eps = static_cast<float>(eps_);
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      avx512::LayerNormRows(in, dest, bf16, channels, begin, end, wp, bp, eps);
    });
    return out;
  }
  if (x.scalar_type() != weight.scalar_type()) {
    // As the kernel computes it (float32 statistics and weights): a CPU without AVX-512 takes this path.
    return at::layer_norm(x.to(at::kFloat), {channels}, weight.to(at::kFloat), bias.to(at::kFloat), eps_)
        .to(x.scalar_type());
  }
  return at::layer_norm(x, {channels}, weight, bias, eps_);
}

}  // namespace atelier::engine
