#include "engine/models/vae.h"

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/nn_layers.h"
#include "engine/models/nn_util.h"

namespace atelier::engine {
namespace {

constexpr double kNormEps = 1e-6;
// Above this many latent pixels a tiled run also splits the mid-block attention into tiles (its cost grows with
// the square of the token count: 128x128 latent pixels, a 1024x1024 image, is ~0.55 TFLOP at full size).
constexpr int64_t kMaxWholeAttentionTokens = 128 * 128;

// model.ResnetBlock (no timestep embedding).
struct ResnetBlockImpl : torch::nn::Module {
  ResnetBlockImpl(int64_t in, int64_t out)
      : norm1(register_module("norm1", GroupNorm(in, kNormEps))),
        conv1(register_module("conv1", Conv2d(in, out, 3, 1, 1))),
        norm2(register_module("norm2", GroupNorm(out, kNormEps))),
        conv2(register_module("conv2", Conv2d(out, out, 3, 1, 1))) {
    if (in != out) nin_shortcut = register_module("nin_shortcut", Conv2d(in, out, 1));
  }
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor h = conv1->forward(norm1->forward(x, 0, /*silu=*/true));
    h = conv2->forward(norm2->forward(h, 0, /*silu=*/true));
    return (nin_shortcut.is_empty() ? x : nin_shortcut->forward(x)) + h;
  }
  GroupNorm norm1;
  Conv2d conv1;
  GroupNorm norm2;
  Conv2d conv2, nin_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock);

// model.AttnBlock: single-head self-attention over the pixels with 1x1 conv projections.
struct AttnBlockImpl : torch::nn::Module {
  explicit AttnBlockImpl(int64_t c)
      : norm(register_module("norm", GroupNorm(c, kNormEps))),
        q(register_module("q", Conv2d(c, c, 1))),
        k(register_module("k", Conv2d(c, c, 1))),
        v(register_module("v", Conv2d(c, c, 1))),
        proj_out(register_module("proj_out", Conv2d(c, c, 1))) {}
  at::Tensor forward(const at::Tensor& x) const {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    // The 1x1 conv projections run on the tokens [b, hw, c] as matrix products; the result goes back to the
    // standard NCHW layout (a permuted view would send every later convolution down the slower channels-last path).
    const at::Tensor n = norm->forward(x).reshape({b, c, h * w}).transpose(1, 2).contiguous();
    const at::Tensor out = Attention(q->ForwardTokens(n), k->ForwardTokens(n), v->ForwardTokens(n),
                                     1.0 / std::sqrt(static_cast<double>(c)));
    return x + proj_out->ForwardTokens(out).transpose(1, 2).reshape({b, c, h, w}).contiguous();
  }
  GroupNorm norm;
  Conv2d q, k, v, proj_out;
};
TORCH_MODULE(AttnBlock);

// A resolution level: block.N (and attn.N where the config has attention at that resolution), downsample/upsample.
struct LevelImpl : torch::nn::Module {
  LevelImpl() : block(register_module("block", torch::nn::ModuleList())), attn(register_module("attn", torch::nn::ModuleList())) {}
  at::Tensor forward(at::Tensor h) const {
    for (size_t i = 0; i < blocks.size(); ++i) {
      CheckStop();
      h = blocks[i]->forward(h);
      if (i < attns.size()) h = attns[i]->forward(h);
    }
    if (!downsample.is_empty()) {
      // model.Downsample: asymmetric zero pad (right and bottom by one), then a stride-2 conv without padding.
      h = downsample->forward(at::constant_pad_nd(h, {0, 1, 0, 1}, 0));
    }
    if (!upsample.is_empty()) {
      h = upsample->ForwardUpsampled2x(h);
    }
    return h;
  }
  void add_block(ResnetBlock b) {
    block->push_back(b);
    blocks.push_back(b.get());
  }
  void add_attn(AttnBlock a) {
    attn->push_back(a);
    attns.push_back(a.get());
  }
  torch::nn::ModuleList block, attn;
  std::vector<const ResnetBlockImpl*> blocks;
  std::vector<const AttnBlockImpl*> attns;
  Conv2d downsample{nullptr}, upsample{nullptr};  // registered as downsample.conv / upsample.conv
};
TORCH_MODULE(Level);

struct MidImpl : torch::nn::Module {
  explicit MidImpl(int64_t c)
      : block_1(register_module("block_1", ResnetBlock(c, c))),
        attn_1(register_module("attn_1", AttnBlock(c))),
        block_2(register_module("block_2", ResnetBlock(c, c))) {}
  at::Tensor forward(const at::Tensor& x) const {
    return block_2->forward(attn_1->forward(block_1->forward(x)));
  }
  ResnetBlock block_1;
  AttnBlock attn_1;
  ResnetBlock block_2;
};
TORCH_MODULE(Mid);

bool HasAttention(const VaeConfig& c, int64_t resolution) {
  for (int r : c.attn_resolutions) {
    if (r == resolution) return true;
  }
  return false;
}

// model.Encoder.
struct EncoderImpl : torch::nn::Module {
  explicit EncoderImpl(const VaeConfig& c) {
    conv_in = register_module("conv_in", Conv2d(c.in_channels, c.ch, 3, 1, 1));
    down = register_module("down", torch::nn::ModuleList());
    const int levels = static_cast<int>(c.ch_mult.size());
    int64_t block_in = c.ch, resolution = c.resolution;
    for (int level = 0; level < levels; ++level) {
      Level l;
      const int64_t block_out = int64_t{c.ch} * c.ch_mult[level];
      for (int i = 0; i < c.num_res_blocks; ++i) {
        l->add_block(ResnetBlock(block_in, block_out));
        block_in = block_out;
        if (HasAttention(c, resolution)) l->add_attn(AttnBlock(block_in));
      }
      if (level != levels - 1) {
        auto holder = l->register_module("downsample", std::make_shared<torch::nn::Module>());
        l->downsample = holder->register_module("conv", Conv2d(block_in, block_in, 3, 2, 0));
        resolution /= 2;
      }
      down->push_back(l);
      levels_.push_back(l.get());
    }
    mid = register_module("mid", Mid(block_in));
    norm_out = register_module("norm_out", GroupNorm(block_in, kNormEps));
    conv_out = register_module("conv_out", Conv2d(block_in, c.double_z ? 2 * c.z_channels : c.z_channels, 3, 1, 1));
  }
  // The full-resolution part (convolutions only: local), then the latent-resolution part (with global attention).
  at::Tensor down_path(const at::Tensor& x) const {
    at::Tensor h = conv_in->forward(x);
    for (const auto* level : levels_) h = level->forward(h);
    return h;
  }
  at::Tensor tail(const at::Tensor& h) const { return conv_out->forward(norm_out->forward(mid->forward(h), 0, /*silu=*/true)); }
  at::Tensor forward(const at::Tensor& x) const { return tail(down_path(x)); }
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr};
  std::vector<const LevelImpl*> levels_;
  Mid mid{nullptr};
  GroupNorm norm_out{nullptr};
};
TORCH_MODULE(Encoder);

// model.Decoder: up[] is indexed by level; the last level runs first.
struct DecoderImpl : torch::nn::Module {
  explicit DecoderImpl(const VaeConfig& c) {
    const int levels = static_cast<int>(c.ch_mult.size());
    int64_t block_in = int64_t{c.ch} * c.ch_mult.back();
    int64_t resolution = c.resolution >> (levels - 1);
    conv_in = register_module("conv_in", Conv2d(c.z_channels, block_in, 3, 1, 1));
    mid = register_module("mid", Mid(block_in));
    std::vector<Level> built(levels, Level(nullptr));
    for (int level = levels - 1; level >= 0; --level) {
      Level l;
      const int64_t block_out = int64_t{c.ch} * c.ch_mult[level];
      for (int i = 0; i <= c.num_res_blocks; ++i) {
        l->add_block(ResnetBlock(block_in, block_out));
        block_in = block_out;
        if (HasAttention(c, resolution)) l->add_attn(AttnBlock(block_in));
      }
      if (level != 0) {
        auto holder = l->register_module("upsample", std::make_shared<torch::nn::Module>());
        l->upsample = holder->register_module("conv", Conv2d(block_in, block_in, 3, 1, 1));
        resolution *= 2;
      }
      built[level] = l;
      run_order_.push_back(l.get());
    }
    up = register_module("up", torch::nn::ModuleList());
    for (auto& l : built) up->push_back(l);
    norm_out = register_module("norm_out", GroupNorm(block_in, kNormEps));
    conv_out = register_module("conv_out", Conv2d(block_in, c.out_ch, 3, 1, 1));
  }
  // The latent-resolution part (with global attention), then the upsampling path (convolutions only: local).
  at::Tensor head(const at::Tensor& z) const { return mid->forward(conv_in->forward(z)); }
  at::Tensor up_path(at::Tensor h) const {
    for (const auto* level : run_order_) h = level->forward(h);
    return conv_out->forward(norm_out->forward(h, 0, /*silu=*/true));
  }
  at::Tensor forward(const at::Tensor& z) const { return up_path(head(z)); }
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  Mid mid{nullptr};
  torch::nn::ModuleList up{nullptr};
  std::vector<const LevelImpl*> run_order_;
  GroupNorm norm_out{nullptr};
};
TORCH_MODULE(Decoder);

// AutoencoderKL: names below first_stage_model.
struct RootImpl : torch::nn::Module {
  explicit RootImpl(const VaeConfig& c)
      : encoder(register_module("encoder", Encoder(c))),
        decoder(register_module("decoder", Decoder(c))),
        quant_conv(register_module("quant_conv", Conv2d(2 * c.z_channels, 2 * c.embed_dim, 1))),
        post_quant_conv(register_module("post_quant_conv", Conv2d(c.embed_dim, c.z_channels, 1))) {}
  Encoder encoder;
  Decoder decoder;
  Conv2d quant_conv, post_quant_conv;
};
TORCH_MODULE(Root);

std::string Shape(const at::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]"); }

// Tile origins along one axis of `n` latent pixels: every `tile - overlap`, the last one flush with the end.
std::vector<int64_t> TileStarts(int64_t n, int64_t tile, int64_t overlap) {
  if (n <= tile) return {0};
  std::vector<int64_t> starts;
  const int64_t stride = std::max<int64_t>(1, tile - overlap);
  for (int64_t s = 0; s + tile < n; s += stride) starts.push_back(s);
  starts.push_back(n - tile);
  return starts;
}

// Blend weights along one axis of a tile `length` output pixels long: a linear ramp over `ramp` pixels on each
// side that has a neighbour, 1 elsewhere.
at::Tensor Ramp(int64_t length, int64_t ramp, bool before, bool after) {
  at::Tensor w = at::ones({length}, at::kFloat);
  const int64_t r = std::min(ramp, length);
  if (r > 0) {
    const at::Tensor rise = (at::arange(r, at::kFloat) + 0.5) / static_cast<double>(r);
    if (before) w.narrow(0, 0, r).mul_(rise);
    if (after) w.narrow(0, length - r, r).mul_(rise.flip(0));
  }
  return w;
}

// Runs `fn` on overlapping tiles of `input` ([B, C, H, W], tiles of `tile` x `tile` in units of `in_unit` input
// pixels) and blends the results, whose pixels are `out_unit` per unit. Every tile normalises with the same GroupNorm
// statistics: a first pass runs each tile with its own statistics and records them, and their area-weighted
// combination (mean, and variance from E[x^2]) is what every tile replays in the second pass. Statistics taken from
// the whole input downscaled to one tile were tried first: they come from another resolution and were off by more
// than 2x at full SD size; per-tile statistics at full resolution stay close to the untiled result.
absl::StatusOr<at::Tensor> RunTiled(const at::Tensor& input, const VaeTiling& tiling, int64_t in_unit, int64_t out_unit,
                                    const std::function<absl::StatusOr<at::Tensor>(const at::Tensor&)>& fn) {
  const int64_t units_h = input.size(2) / in_unit, units_w = input.size(3) / in_unit;
  const int64_t tile = std::max<int64_t>(1, tiling.tile), overlap = std::clamp<int64_t>(tiling.overlap, 0, tile - 1);
  if (units_h <= tile && units_w <= tile) return fn(input);
  c10::InferenceMode inference;
  const auto ys = TileStarts(units_h, tile, overlap), xs = TileStarts(units_w, tile, overlap);
  const int64_t th = std::min(tile, units_h), tw = std::min(tile, units_w);
  auto piece_at = [&](size_t yi, size_t xi) {
    return input.narrow(2, ys[yi] * in_unit, th * in_unit).narrow(3, xs[xi] * in_unit, tw * in_unit);
  };

  // Pass 1: every tile's own statistics, combined. rstd = 1/sqrt(var + eps), so 1/rstd^2 combines like var.
  std::vector<at::Tensor> sum_mean, sum_square;  // per GroupNorm call: sum of mean, of (var + eps + mean^2)
  const double tiles = static_cast<double>(ys.size() * xs.size());
  for (size_t yi = 0; yi < ys.size(); ++yi) {
    for (size_t xi = 0; xi < xs.size(); ++xi) {
      GroupNormStats own;
      {
        GroupNormStatsScope scope(&own);
        if (auto r = fn(piece_at(yi, xi)); !r.ok()) return r.status();
      }
      if (sum_mean.empty()) sum_mean.resize(own.mean_rstd.size()), sum_square.resize(own.mean_rstd.size());
      for (size_t i = 0; i < own.mean_rstd.size() && i < sum_mean.size(); ++i) {
        const auto& [mean, rstd] = own.mean_rstd[i];
        const at::Tensor square = rstd.pow(-2) + mean * mean;
        sum_mean[i] = sum_mean[i].defined() ? sum_mean[i] + mean : mean;
        sum_square[i] = sum_square[i].defined() ? sum_square[i] + square : square;
      }
    }
  }
  GroupNormStats stats;
  for (size_t i = 0; i < sum_mean.size(); ++i) {
    const at::Tensor mean = sum_mean[i] / tiles;
    stats.mean_rstd.emplace_back(mean, at::rsqrt((sum_square[i] / tiles - mean * mean).clamp_min(1e-12)));
  }
  stats.recording = false;

  at::Tensor out, weight;
  for (size_t yi = 0; yi < ys.size(); ++yi) {
    for (size_t xi = 0; xi < xs.size(); ++xi) {
      stats.next = 0;
      GroupNormStatsScope scope(&stats);
      auto result = fn(piece_at(yi, xi));
      if (!result.ok()) return result.status();
      const at::Tensor r = result->to(at::kFloat);
      if (!out.defined()) {
        out = at::zeros({r.size(0), r.size(1), units_h * out_unit, units_w * out_unit}, r.options());
        weight = at::zeros({units_h * out_unit, units_w * out_unit}, r.options());
      }
      const at::Tensor wy = Ramp(th * out_unit, overlap * out_unit, yi > 0, yi + 1 < ys.size());
      const at::Tensor wx = Ramp(tw * out_unit, overlap * out_unit, xi > 0, xi + 1 < xs.size());
      const at::Tensor w = (wy.unsqueeze(1) * wx.unsqueeze(0)).to(r.device());
      out.narrow(2, ys[yi] * out_unit, th * out_unit).narrow(3, xs[xi] * out_unit, tw * out_unit).add_(r * w);
      weight.narrow(0, ys[yi] * out_unit, th * out_unit).narrow(1, xs[xi] * out_unit, tw * out_unit).add_(w);
    }
  }
  return out / weight;
}

}  // namespace

at::Tensor VaePosterior::Sample(const at::Tensor& noise) const { return mean + std * noise.to(mean.options()); }

absl::Status CheckImageSize(int64_t width, int64_t height) {
  if (width <= 0 || height <= 0 || width % 8 != 0 || height % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("image size ", width, "x", height, " is not usable: width and height must be positive multiples of 8"));
  }
  return absl::OkStatus();
}

struct Vae::Impl {
  explicit Impl(const VaeConfig& c) : root(c) {}
  Root root;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  at::MemoryFormat activation_layout = at::MemoryFormat::Contiguous;
  mutable std::atomic<int64_t> oom_fallbacks{0};
};

Vae::Vae(const VaeConfig& config) : config_(config), impl_(std::make_unique<Impl>(config)) {}
Vae::~Vae() = default;

at::ScalarType Vae::dtype() const { return impl_->dtype; }
int64_t Vae::oom_fallbacks() const { return impl_->oom_fallbacks.load(); }

std::vector<std::pair<std::string, std::vector<std::int64_t>>> Vae::ParameterShapes(const VaeConfig& config) {
  Root root(config);
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const auto& p : root->named_parameters()) out.emplace_back(p.key(), p.value().sizes().vec());
  return out;
}

absl::StatusOr<std::unique_ptr<Vae>> Vae::Create(const VaeConfig& config, const WeightMap& weights) {
  if (config.ch <= 0 || config.ch % 32 != 0 || config.ch_mult.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("VAE config: ch ", config.ch, " must be a positive multiple of 32 and ch_mult non-empty"));
  }
  std::unique_ptr<Vae> vae(new Vae(config));
  try {
    torch::NoGradGuard no_grad;
    if (auto s = LoadWeights(*vae->impl_->root, weights, "first_stage_model"); !s.ok()) return s;
    const at::Tensor& probe = vae->impl_->root->post_quant_conv->weight;
    vae->impl_->dtype = probe.scalar_type();
    vae->impl_->device = probe.device();
    const at::Tensor& conv = vae->impl_->root->decoder->conv_in->weight;
    vae->impl_->activation_layout = conv.is_contiguous(at::MemoryFormat::ChannelsLast) && !conv.is_contiguous()
                                        ? at::MemoryFormat::ChannelsLast
                                        : at::MemoryFormat::Contiguous;
  } catch (const std::exception& e) {
    return StatusFromException(e, "building the VAE");
  }
  return vae;
}

at::Tensor Vae::PostQuantConv(const at::Tensor& latent) const {
  c10::InferenceMode inference;
  return impl_->root->post_quant_conv->forward(latent.to(impl_->dtype)).to(at::kFloat);
}

absl::StatusOr<at::Tensor> Vae::DecodeWhole(const at::Tensor& latent) const {
  try {
    c10::InferenceMode inference;
    const RootImpl& root = *impl_->root;
    // Channels-last activations when the weights are (VaeWeightLayout: bfloat16 / float16).
    const at::Tensor z = latent.to(at::TensorOptions().dtype(impl_->dtype).device(impl_->device))
                             .contiguous(impl_->activation_layout);
    return root.decoder->forward(root.post_quant_conv->forward(z)).to(at::kFloat).contiguous();
  } catch (const std::exception& e) {
    return StatusFromException(e, "the VAE decode");
  }
}

absl::StatusOr<at::Tensor> Vae::EncodeWhole(const at::Tensor& image, VaeEncodeTrace* trace) const {
  try {
    c10::InferenceMode inference;
    const RootImpl& root = *impl_->root;
    const at::Tensor x = image.to(at::TensorOptions().dtype(impl_->dtype).device(impl_->device));
    const at::Tensor encoded = root.encoder->forward(x);
    const at::Tensor moments = root.quant_conv->forward(encoded).to(at::kFloat);
    if (trace) {
      trace->encoder_out = encoded.to(at::kFloat);
      trace->moments = moments;
    }
    return moments;
  } catch (const std::exception& e) {
    return StatusFromException(e, "the VAE encode");
  }
}

absl::StatusOr<at::Tensor> Vae::Decode(const at::Tensor& latent, const VaeCallOptions& options) const {
  if (latent.dim() != 4 || latent.size(1) != config_.embed_dim || latent.size(2) == 0 || latent.size(3) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("VAE decode needs a latent [batch, ", config_.embed_dim, ", h, w], got ", Shape(latent)));
  }
  const int64_t pixels = latent.size(2) * latent.size(3) * 64;
  const bool tiled = options.mode == VaeTileMode::kAlways ||
                     (options.mode == VaeTileMode::kAuto && pixels > options.max_untiled_pixels);
  if (!tiled) {
    auto whole = DecodeWhole(latent);
    if (whole.ok() || options.mode != VaeTileMode::kAuto ||
        whole.status().code() != absl::StatusCode::kResourceExhausted) {
      return whole;
    }
    impl_->oom_fallbacks.fetch_add(1);
  }
  return DecodeTiled(latent, options.tiling);
}

// The latent-resolution head (post_quant_conv, conv_in, the mid block with its global attention) runs on the
// whole latent when that is small enough (its attention is exact then); the upsampling path runs in tiles.
absl::StatusOr<at::Tensor> Vae::DecodeTiled(const at::Tensor& latent, const VaeTiling& tiling) const {
  const RootImpl& root = *impl_->root;
  const at::TensorOptions to = at::TensorOptions().dtype(impl_->dtype).device(impl_->device);
  try {
    c10::InferenceMode inference;
    const at::Tensor z = latent.to(to);
    if (latent.size(2) * latent.size(3) > kMaxWholeAttentionTokens) {
      return RunTiled(z, tiling, 1, 8, [&](const at::Tensor& piece) -> absl::StatusOr<at::Tensor> {
        CheckStop();
        return root.decoder->forward(root.post_quant_conv->forward(piece));
      });
    }
    const at::Tensor head = root.decoder->head(root.post_quant_conv->forward(z));
    return RunTiled(head, tiling, 1, 8, [&](const at::Tensor& piece) -> absl::StatusOr<at::Tensor> {
      CheckStop();
      return root.decoder->up_path(piece);
    });
  } catch (const std::exception& e) {
    return StatusFromException(e, "the tiled VAE decode");
  }
}

absl::StatusOr<at::Tensor> Vae::EncodeTiled(const at::Tensor& image, const VaeTiling& tiling) const {
  const RootImpl& root = *impl_->root;
  const at::TensorOptions to = at::TensorOptions().dtype(impl_->dtype).device(impl_->device);
  try {
    c10::InferenceMode inference;
    const at::Tensor x = image.to(to);
    if ((image.size(2) / 8) * (image.size(3) / 8) > kMaxWholeAttentionTokens) {
      return RunTiled(x, tiling, 8, 1, [&](const at::Tensor& piece) -> absl::StatusOr<at::Tensor> {
        return root.quant_conv->forward(root.encoder->forward(piece));
      });
    }
    auto features = RunTiled(x, tiling, 8, 1, [&](const at::Tensor& piece) -> absl::StatusOr<at::Tensor> {
      return root.encoder->down_path(piece);
    });
    if (!features.ok()) return features.status();
    return root.quant_conv->forward(root.encoder->tail(features->to(to)));
  } catch (const std::exception& e) {
    return StatusFromException(e, "the tiled VAE encode");
  }
}

absl::StatusOr<VaePosterior> Vae::Encode(const at::Tensor& image, const VaeCallOptions& options,
                                         VaeEncodeTrace* trace) const {
  if (image.dim() != 4 || image.size(1) != config_.in_channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("VAE encode needs an image [batch, ", config_.in_channels, ", H, W], got ", Shape(image)));
  }
  if (auto s = CheckImageSize(image.size(3), image.size(2)); !s.ok()) return s;
  const int64_t pixels = image.size(2) * image.size(3);
  const bool tiled = options.mode == VaeTileMode::kAlways ||
                     (options.mode == VaeTileMode::kAuto && pixels > options.max_untiled_pixels);
  absl::StatusOr<at::Tensor> moments;
  if (tiled) {
    moments = EncodeTiled(image, options.tiling);
  } else {
    moments = EncodeWhole(image, trace);
    if (!moments.ok() && options.mode == VaeTileMode::kAuto &&
        moments.status().code() == absl::StatusCode::kResourceExhausted) {
      impl_->oom_fallbacks.fetch_add(1);
      moments = EncodeTiled(image, options.tiling);
    }
  }
  if (!moments.ok()) return moments.status();
  *moments = moments->to(at::kFloat);
  c10::InferenceMode inference;
  const auto parts = moments->chunk(2, 1);
  VaePosterior posterior;
  posterior.mean = parts[0];
  posterior.logvar = at::clamp(parts[1], -30.0, 20.0);
  posterior.std = at::exp(0.5 * posterior.logvar);
  return posterior;
}

}  // namespace atelier::engine
