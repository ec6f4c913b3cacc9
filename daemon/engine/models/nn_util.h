// Shared pieces of the model code: loading checkpoint weights into modules whose members are named after the
// checkpoint keys, and attention that never materialises more than a bounded score matrix.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/models/checkpoint_loader.h"

namespace atelier::engine {

// Sets every parameter and buffer of `module` to the tensor of the same name in `weights` (shared, not copied).
// A missing name, a wrong shape, or a name in `weights` the module does not have is an error naming the tensor
// (`what` + "." + name), listing up to ten of each. Buffers listed in `optional` may be absent.
absl::Status LoadWeights(torch::nn::Module& module, const WeightMap& weights, const std::string& what,
                         const std::set<std::string>& optional = {});

// Names of weights holding NaN or infinity (checked once at load; a warning, not an error, as WebUI loads them).
std::vector<std::string> NonFiniteWeights(const WeightMap& weights);

// softmax(q k^T * scale) v for q [batch, queries, dim], k/v [batch, keys, dim]. On the CPU it works on one batch
// item (head) and a slice of its queries at a time, so the score block stays under min(max_score_bytes, 1 MiB): it
// never materialises the [batch, queries, keys] matrix. On CUDA with libtorch 2.x it uses
// scaled_dot_product_attention.
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                     std::int64_t max_score_bytes = 1ll << 20);

// Attention over heads laid side by side, as the q/k/v projections make them: q [B, N, H*D], k/v [B, M, H*D] ->
// [B, N, H*D]. On the CPU with oneDNN each head is read and written in place (strided views, no split or merge
// copies); elsewhere it splits into [B*H, T, D], runs Attention and merges back.
at::Tensor MultiHeadAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t heads,
                              double scale);

// Which attention Attention() runs for a device, for the log.
std::string AttentionKind(const at::Tensor& sample);

// A cooperative stop for long model calls (a 2048x2048 UNet step or VAE decode takes minutes on a CPU): while a
// StopScope lives on this thread, CheckStop() — called between layers, VAE tiles and attention blocks — throws
// StopRequested once the scope's predicate says stop. The model's entry point turns it into CANCELLED
// (StatusFromException), so a cancelled job frees the device within one layer or attention block of work.
struct StopRequested : std::exception {
  const char* what() const noexcept override { return "stopped on request"; }
};
class StopScope {
 public:
  // `should_stop` must be cheap (an atomic read); empty: no stop (an outer scope stays hidden meanwhile).
  explicit StopScope(std::function<bool()> should_stop);
  ~StopScope();
  StopScope(const StopScope&) = delete;
  StopScope& operator=(const StopScope&) = delete;

 private:
  std::function<bool()> should_stop_;
  const StopScope* outer_;
  friend void CheckStop();
};
void CheckStop();

// A libtorch exception as a status: allocation failures are RESOURCE_EXHAUSTED (the caller may retry with less
// memory), StopRequested is CANCELLED, anything else INTERNAL; the message says what was being done.
absl::Status StatusFromException(const std::exception& e, const std::string& doing);

// GroupNorm computed in float32 whatever the input dtype (LDM's GroupNorm32), cast back.
at::Tensor GroupNorm32(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                       double eps);

// A module's parameters by name for patching in place (LoRA): the handles are found once (named_parameters()
// rebuilds every name on each call). Get returns a view of the live tensor; Replace swaps in a tensor of the same
// shape (giving back what Get returned restores the model exactly).
class ParameterTable {
 public:
  absl::StatusOr<at::Tensor> Get(const torch::nn::Module& root, const std::string& name);
  absl::Status Replace(const torch::nn::Module& root, const std::string& name, const at::Tensor& value);

 private:
  std::map<std::string, at::Tensor> parameters_;
};

}  // namespace atelier::engine
