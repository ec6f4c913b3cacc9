#include "engine/models/nn_util.h"

#include "engine/models/onednn_matmul.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <functional>
#include <map>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"

namespace atelier::engine {

namespace {
// Score block of the CPU attention: one head, as many queries as fit (see Attention).
constexpr std::int64_t kScoreBlockBytes = 1ll << 20;
}  // namespace

absl::Status LoadWeights(torch::nn::Module& module, const WeightMap& weights, const std::string& what,
                         const std::set<std::string>& optional) {
  std::map<std::string, at::Tensor*> wanted;
  std::vector<std::pair<std::string, at::Tensor>> items;
  for (auto& p : module.named_parameters()) items.emplace_back(p.key(), p.value());
  for (auto& b : module.named_buffers()) items.emplace_back(b.key(), b.value());
  std::vector<std::string> missing, misshaped, unexpected;
  for (auto& [name, target] : items) {
    const auto it = weights.find(name);
    if (it == weights.end()) {
      if (optional.count(name) == 0) missing.push_back(absl::StrCat(what, ".", name));
      continue;
    }
    if (it->second.sizes() != target.sizes()) {
      misshaped.push_back(absl::StrCat(what, ".", name, " is [", absl::StrJoin(it->second.sizes(), ", "),
                                       "], expected [", absl::StrJoin(target.sizes(), ", "), "]"));
      continue;
    }
    target.set_data(it->second);
  }
  std::set<std::string> known;
  for (const auto& [name, t] : items) known.insert(name);
  for (const auto& [name, t] : weights) {
    if (known.count(name) == 0) unexpected.push_back(absl::StrCat(what, ".", name));
  }
  if (missing.empty() && misshaped.empty() && unexpected.empty()) return absl::OkStatus();
  auto list = [](const std::vector<std::string>& names) {
    std::vector<std::string> shown(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(10, names.size())));
    return absl::StrCat(absl::StrJoin(shown, ", "), names.size() > 10 ? absl::StrCat(" and ", names.size() - 10, " more") : "");
  };
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(absl::StrCat(missing.size(), " missing: ", list(missing)));
  if (!misshaped.empty()) parts.push_back(absl::StrCat(misshaped.size(), " of the wrong shape: ", list(misshaped)));
  if (!unexpected.empty()) parts.push_back(absl::StrCat(unexpected.size(), " unexpected: ", list(unexpected)));
  return absl::InvalidArgumentError(absl::StrCat("the ", what, " weights do not fit the model: ", absl::StrJoin(parts, "; ")));
}

std::vector<std::string> NonFiniteWeights(const WeightMap& weights) {
  std::vector<std::string> bad;
  for (const auto& [name, t] : weights) {
    if (t.is_floating_point() && !at::isfinite(t).all().item<bool>()) bad.push_back(name);
  }
  return bad;
}

std::string AttentionKind(const at::Tensor& sample) {
#if TORCH_VERSION_MAJOR >= 2
  if (sample.is_cuda()) return "scaled_dot_product_attention";
#endif
  (void)sample;
  if (!sample.is_cpu()) return "query-sliced batched products (score slices up to 256 MiB)";
  return "blocked per head (score blocks of at most 1 MiB)";
}

namespace {

// The blocked CPU attention with oneDNN products, on 2-D views: for each (batch item, head) `q_of(i)` [N, D],
// `k_of(i)`, `v_of(i)` [M, D] and the destination `out_of(i)` [N, D] may be strided views into wider tensors. q k^T
// with the scale folded in goes into a float32 score block (bf16 inputs multiply exactly and accumulate in float32,
// so the scores are those of the float32 path), the softmax runs in float32, then probabilities (rounded to the
// input dtype) times v into the destination. False when oneDNN cannot run these types here.
template <typename ViewOf>
bool OneDnnBlockedAttention(int64_t items, const ViewOf& q_of, const ViewOf& k_of, const ViewOf& v_of,
                            const ViewOf& out_of, double scale, std::int64_t max_score_bytes) {
  const at::Tensor q0 = q_of(0), k0 = k_of(0);
  if (!OneDnnAvailable() || !q0.is_cpu() || q0.scalar_type() != k0.scalar_type() ||
      q0.scalar_type() != v_of(0).scalar_type() ||
      (q0.scalar_type() != at::kBFloat16 && q0.scalar_type() != at::kFloat)) {
    return false;
  }
  const int64_t queries = q0.size(0), keys = k0.size(0);
  const int64_t block_bytes = std::min<int64_t>(max_score_bytes, kScoreBlockBytes);
  const int64_t slice = std::clamp<int64_t>(block_bytes / (keys * static_cast<int64_t>(sizeof(float))), 1, queries);
  at::Tensor scores = at::empty({slice, keys}, q0.options().dtype(at::kFloat));
  at::Tensor probs = q0.scalar_type() == at::kFloat ? scores : at::empty({slice, keys}, q0.options());
  for (int64_t i = 0; i < items; ++i) {
    const at::Tensor qi = q_of(i), kt = k_of(i).t(), vi = v_of(i), oi = out_of(i);
    for (int64_t start = 0; start < queries; start += slice) {
      const int64_t n = std::min(slice, queries - start);
      at::Tensor s = scores.narrow(0, 0, n);
      if (!OneDnnMatmul(qi.narrow(0, start, n), kt, s, static_cast<float>(scale))) return false;
      at::Tensor p = probs.narrow(0, 0, n);
      if (!OneDnnSoftmax(s, p)) {  // the softmax and the rounding to bf16 in one pass
        at::softmax_out(s, s, -1);
        if (!p.is_same(s)) p.copy_(s);
      }
      at::Tensor dest = oi.narrow(0, start, n);
      if (!OneDnnMatmul(p, vi, dest)) return false;
      CheckStop();  // one score block (about 1 MiB of work) at a time
    }
  }
  return true;
}

at::Tensor OneDnnAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                           std::int64_t max_score_bytes) {
  if (!q.is_cpu() || q.size(0) == 0) return {};
  at::Tensor out = at::empty({q.size(0), q.size(1), v.size(2)}, v.options());
  auto of = [](const at::Tensor& t) { return [&t](int64_t i) { return t[i]; }; };
  const auto q_of = of(q), k_of = of(k), v_of = of(v), out_of = of(out);
  using View = std::function<at::Tensor(int64_t)>;
  if (!OneDnnBlockedAttention<View>(q.size(0), q_of, k_of, v_of, out_of, scale, max_score_bytes)) return {};
  return out;
}

}  // namespace

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                     std::int64_t max_score_bytes) {
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    return at::scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), {}, 0.0, false, scale)
        .squeeze(0);
  }
#endif
  if (!q.is_cpu()) {  // a GPU without SDPA (libtorch 1.x): few large batched products, query slices bounded
    const int64_t per_query = q.size(0) * k.size(1) * static_cast<int64_t>(sizeof(float));
    const int64_t gpu_slice = std::clamp<int64_t>((256ll << 20) / per_query, 1, q.size(1));
    std::vector<at::Tensor> parts;
    const at::Tensor kt = k.transpose(1, 2);
    for (int64_t start = 0; start < q.size(1); start += gpu_slice) {
      const at::Tensor scores = at::bmm(q.narrow(1, start, std::min(gpu_slice, q.size(1) - start)).to(at::kFloat) * scale,
                                        kt.to(at::kFloat));
      parts.push_back(at::bmm(at::softmax(scores, -1).to(v.scalar_type()), v));
    }
    return at::cat(parts, 1);
  }
  if (auto fast = OneDnnAttention(q, k, v, scale, max_score_bytes); fast.defined()) return fast;
  // Scores and softmax in float32 whatever the input dtype: bf16 scores (8 bits of mantissa) would put errors of
  // several percent into exp(). Everything is computed in float32 and the result cast back.
  const bool upcast = q.scalar_type() != at::kFloat;
  const at::Tensor qf = upcast ? q.to(at::kFloat) : q, kf = upcast ? k.to(at::kFloat) : k,
                   vf = upcast ? v.to(at::kFloat) : v;
  const int64_t batch = q.size(0), queries = q.size(1), keys = k.size(1);
  // One batch item (head) and a slice of its queries at a time, so the score block stays within about 1 MiB: it
  // stays in cache between the two products and the softmax (measured 1.2-3.5x faster than whole-batch slices of
  // 16-64 MiB), and memory never holds more than that.
  const int64_t block_bytes = std::min<int64_t>(max_score_bytes, kScoreBlockBytes);
  const int64_t slice = std::clamp<int64_t>(block_bytes / (keys * static_cast<int64_t>(sizeof(float))), 1, queries);
  const at::Tensor qs = qf * scale;  // scaling q costs N*D, scaling the scores N*M
  at::Tensor out = at::empty({batch, queries, v.size(2)}, qs.options());
  at::Tensor scores = at::empty({slice, keys}, qs.options());  // reused by every block
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor qb = qs[b], kt = kf[b].t(), vb = vf[b], ob = out[b];
    for (int64_t start = 0; start < queries; start += slice) {
      const int64_t n = std::min(slice, queries - start);
      at::Tensor s = scores.narrow(0, 0, n);
      at::mm_out(s, qb.narrow(0, start, n), kt);
      at::softmax_out(s, s, -1);
      at::Tensor dest = ob.narrow(0, start, n);
      at::mm_out(dest, s, vb);
      CheckStop();  // one score block (about 1 MiB of work) at a time
    }
  }
  return upcast ? out.to(v.scalar_type()) : out;
}

at::Tensor MultiHeadAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t heads,
                              double scale) {
  const int64_t b = q.size(0), n = q.size(1), m = k.size(1), dim = q.size(2) / heads, dim_v = v.size(2) / heads;
  if (q.is_cpu() && b > 0 && q.stride(2) == 1 && k.stride(2) == 1 && v.stride(2) == 1) {
    at::Tensor out = at::empty({b, n, heads * dim_v}, v.options());
    // Item i = (batch item, head): the head's columns of row block i / heads. q and k are copied per head (oneDNN's
    // bf16 kernels run a strided K dimension 10x slower); v and the output stay strided views (as fast as dense).
    using View = std::function<at::Tensor(int64_t)>;
    auto head_of = [heads](const at::Tensor& t, int64_t width, bool dense) -> View {
      return [&t, heads, width, dense](int64_t i) {
        at::Tensor head = t[i / heads].narrow(1, (i % heads) * width, width);
        return dense ? head.contiguous() : head;
      };
    };
    if (OneDnnBlockedAttention<View>(b * heads, head_of(q, dim, true), head_of(k, dim, true),
                                     head_of(v, dim_v, false), head_of(out, dim_v, false), scale, kScoreBlockBytes)) {
      return out;
    }
  }
  auto split = [&](const at::Tensor& t, int64_t tokens, int64_t width) {  // [B, T, H*D] -> [B*H, T, D]
    return t.reshape({b, tokens, heads, width}).permute({0, 2, 1, 3}).reshape({b * heads, tokens, width});
  };
  const at::Tensor out = Attention(split(q, n, dim), split(k, m, dim), split(v, m, dim_v), scale);
  return out.view({b, heads, n, dim_v}).permute({0, 2, 1, 3}).reshape({b, n, heads * dim_v});
}

namespace {
thread_local const StopScope* g_stop_scope = nullptr;
}  // namespace

StopScope::StopScope(std::function<bool()> should_stop) : should_stop_(std::move(should_stop)), outer_(g_stop_scope) {
  g_stop_scope = this;
}

StopScope::~StopScope() { g_stop_scope = outer_; }

void CheckStop() {
  const StopScope* scope = g_stop_scope;
  if (scope != nullptr && scope->should_stop_ && scope->should_stop_()) throw StopRequested();
}

absl::Status StatusFromException(const std::exception& e, const std::string& doing) {
  if (dynamic_cast<const StopRequested*>(&e) != nullptr) {
    return absl::CancelledError(absl::StrCat(doing, " stopped: the job was cancelled"));
  }
  const std::string what = e.what();
  // Only the first line: libtorch appends a C++ backtrace.
  const std::string first = what.substr(0, what.find('\n'));
  if (absl::StrContains(what, "out of memory") || absl::StrContains(what, "can't allocate memory") ||
      absl::StrContains(what, "Tried to allocate") || dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory in ", doing, ": ", first));
  }
  return absl::InternalError(absl::StrCat(doing, " failed: ", first));
}

at::Tensor GroupNorm32(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                       double eps) {
  if (x.scalar_type() == at::kFloat) return at::group_norm(x, groups, weight, bias, eps);
  return at::group_norm(x.to(at::kFloat), groups, weight.to(at::kFloat), bias.to(at::kFloat), eps).to(x.scalar_type());
}

absl::StatusOr<at::Tensor> ParameterTable::Get(const torch::nn::Module& root, const std::string& name) {
  if (parameters_.empty()) {
    for (const auto& p : root.named_parameters()) parameters_.emplace(p.key(), p.value());
  }
  auto it = parameters_.find(name);
  if (it == parameters_.end()) return absl::NotFoundError(absl::StrCat("the model has no parameter ", name));
  return it->second.data();
}

absl::Status ParameterTable::Replace(const torch::nn::Module& root, const std::string& name, const at::Tensor& value) {
  if (auto current = Get(root, name); !current.ok()) return current.status();
  at::Tensor& param = parameters_.at(name);
  if (param.sizes() != value.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " cannot change its shape"));
  }
  param.set_data(value);
  return absl::OkStatus();
}

}  // namespace atelier::engine
