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
#include "engine/io/tensor_index.h"
#include "engine/io/tensor_set.h"

namespace atelier::engine {

// Names, dtypes and shapes only: reads the safetensors header or runs the pickle without reading storages.
absl::StatusOr<TensorIndex> ReadTensorIndex(const std::filesystem::path& path);

// Every tensor with its data. Views and non-contiguous tensors in pickles come back with their logical values.
absl::StatusOr<TensorSet> ReadTensorSet(const std::filesystem::path& path);

}  // namespace atelier::engine
