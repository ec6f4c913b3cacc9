#include "engine/io/tensor_index.h"

namespace atelier::engine {

const TensorInfo* TensorIndex::Find(absl::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors[it->second];
}

void TensorIndex::Build() {
  by_name_.clear();
  for (std::size_t i = 0; i < tensors.size(); ++i) by_name_[tensors[i].name] = i;
}

}  // namespace atelier::engine
