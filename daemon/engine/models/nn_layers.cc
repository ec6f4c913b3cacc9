#include "engine/models/nn_layers.h"

namespace atelier::engine {

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool with_bias)
    : stride_(stride), padding_(padding) {
  weight = register_parameter("weight", at::empty({out, in, kernel, kernel}), false);
  if (with_bias) bias = register_parameter("bias", at::empty({out}), false);
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) const {
  return at::conv2d(x, weight, bias, {stride_, stride_}, {padding_, padding_});
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

at::Tensor GroupNormImpl::forward(const at::Tensor& x, int64_t frames) const {
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
  return upcast ? h.to(x.scalar_type()) : h;
}

LayerNormImpl::LayerNormImpl(int64_t channels, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::empty({channels}), false);
  bias = register_parameter("bias", at::empty({channels}), false);
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps_);
}

}  // namespace atelier::engine
