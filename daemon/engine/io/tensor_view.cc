#include "engine/io/tensor_view.h"

#include <ATen/Functions.h>

#include "engine/io/tensor_set.h"

namespace atelier::engine {

at::Tensor TensorView(const std::shared_ptr<const SafetensorsFile>& file, const TensorEntry& entry) {
  auto keep_alive = file->mapping();
  void* data = const_cast<std::byte*>(file->Data(entry));
  return at::from_blob(
      data, entry.shape, [keep_alive](void*) mutable { keep_alive.reset(); },
      at::TensorOptions().dtype(ToScalarType(entry.dtype)).device(at::kCPU));
}

}  // namespace atelier::engine
