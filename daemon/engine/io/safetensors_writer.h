// Writing safetensors files (conversion from pickles, tests). The file is written beside the target and renamed
// into place, so a reader never sees a half-written file.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace atelier::engine {

// Tensors are written in the given order (CPU, any layout: they are made contiguous). Names must be unique.
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace atelier::engine
