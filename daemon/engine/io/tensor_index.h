// Names, dtypes and shapes of the tensors in a checkpoint file, without their data: enough to identify what a
// file is (checkpoint_layout.h) and to check a configuration against it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/io/safetensors.h"

namespace atelier::engine {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
};

struct TensorIndex {
  std::string format;  // "safetensors", "zip pickle" or "legacy pickle"
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;  // safetensors __metadata__

  // nullptr when absent. Build() must have been called after filling `tensors`.
  const TensorInfo* Find(absl::string_view name) const;
  void Build();

 private:
  std::unordered_map<std::string, std::size_t> by_name_;
};

}  // namespace atelier::engine
