#include "engine/nn_util.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <map>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"

namespace atelier::engine {

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
  return "sliced (score matrix capped at 64 MiB per slice)";
}

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                     std::int64_t max_score_bytes) {
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    return at::scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), {}, 0.0, false, scale)
        .squeeze(0);
  }
#endif
  // Scores and softmax in float32 whatever the input dtype: bf16 scores (8 bits of mantissa) would put errors of
  // several percent into exp(). The probabilities go back to v's dtype for the second product.
  const bool upcast = q.scalar_type() != at::kFloat;
  const int64_t batch = q.size(0), queries = q.size(1), keys = k.size(1);
  const int64_t bytes_per_query = batch * keys * static_cast<int64_t>(sizeof(float));
  const int64_t slice = std::max<int64_t>(1, std::min<int64_t>(queries, max_score_bytes / std::max<int64_t>(1, bytes_per_query)));
  const at::Tensor kt = (upcast ? k.to(at::kFloat) : k).transpose(1, 2);
  const at::Tensor qs = (upcast ? q.to(at::kFloat) : q) * scale;  // scaling q costs N*D, scaling the scores N*M
  if (slice == queries) {
    const at::Tensor p = at::softmax(at::bmm(qs, kt), -1);
    return at::bmm(upcast ? p.to(v.scalar_type()) : p, v);
  }
  at::Tensor out = at::empty({batch, queries, v.size(2)}, v.options());
  at::Tensor scores = at::empty({batch, slice, keys}, qs.options());  // reused by every slice
  at::Tensor probs = upcast ? at::empty({batch, slice, keys}, v.options()) : scores;
  for (int64_t start = 0; start < queries; start += slice) {
    const int64_t n = std::min(slice, queries - start);
    at::Tensor s = scores.narrow(1, 0, n);
    at::bmm_out(s, qs.narrow(1, start, n), kt);
    at::softmax_out(s, s, -1);
    at::Tensor p = probs.narrow(1, 0, n);
    if (upcast) p.copy_(s);
    at::Tensor dest = out.narrow(1, start, n);
    at::bmm_out(dest, p, v);
  }
  return out;
}

absl::Status StatusFromException(const std::exception& e, const std::string& doing) {
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

}  // namespace atelier::engine
