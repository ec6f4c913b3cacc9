// A checkpoint's tensors in memory (what every reader returns), and the dtype mapping between files and ATen.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/io/tensor_index.h"

namespace atelier::engine {

struct TensorSet {
  std::string format;
  // In file order. Safetensors tensors view the file's mapping; pickle tensors own their memory.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> metadata;
};

// The index of a TensorSet already in memory.
TensorIndex IndexOf(const TensorSet& set);

// at::ScalarType of a file dtype, and back.
at::ScalarType ToScalarType(DType dtype);
absl::StatusOr<DType> FromScalarType(at::ScalarType type);

}  // namespace atelier::engine
