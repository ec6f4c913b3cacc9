// Reading tensor files in every format SD users have: safetensors (memory-mapped, zero-copy), PyTorch zip
// pickles (.ckpt/.pt/.pth, torch >= 1.6) and PyTorch legacy pickles (pre-1.6). The format is found from the
// content, not the extension. Pickles go through the non-executing walker (pickle.h). Tensors under a
// "state_dict" wrapper are found; nested dicts of tensors come back with dotted names ("string_to_param.*").
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/tensor_index.h"

namespace atelier::engine {

struct TensorSet {
  std::string format;
  // In file order. Safetensors tensors view the file's mapping; pickle tensors own their memory.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> metadata;
};

// Names, dtypes and shapes only: reads the safetensors header or runs the pickle without reading storages.
absl::StatusOr<TensorIndex> ReadTensorIndex(const std::filesystem::path& path);

// Every tensor with its data. Views and non-contiguous tensors in pickles come back with their logical values.
absl::StatusOr<TensorSet> ReadTensorSet(const std::filesystem::path& path);

// The index of a TensorSet already in memory.
TensorIndex IndexOf(const TensorSet& set);

// at::ScalarType of a file dtype, and back.
at::ScalarType ToScalarType(DType dtype);
absl::StatusOr<DType> FromScalarType(at::ScalarType type);

}  // namespace atelier::engine
