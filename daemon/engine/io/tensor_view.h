// at::Tensor views of memory-mapped checkpoint tensors.
#pragma once

#include <memory>

#include <ATen/core/Tensor.h>

#include "engine/io/safetensors.h"

namespace atelier::engine {

// A CPU tensor viewing `entry`'s bytes in `file`'s mapping without copying. The view keeps the mapping alive.
at::Tensor TensorView(const std::shared_ptr<const SafetensorsFile>& file, const TensorEntry& entry);

}  // namespace atelier::engine
