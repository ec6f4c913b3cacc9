#include "engine/tensor_view.h"

#include <ATen/Functions.h>

namespace atelier::engine {
namespace {

at::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64: return at::kDouble;
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI32: return at::kInt;
    case DType::kI16: return at::kShort;
    case DType::kI8: return at::kChar;
    case DType::kU8: return at::kByte;
    case DType::kBool: return at::kBool;
  }
  return at::kFloat;
}

}  // namespace

at::Tensor TensorView(const std::shared_ptr<const SafetensorsFile>& file, const TensorEntry& entry) {
  auto keep_alive = file->mapping();
  void* data = const_cast<std::byte*>(file->Data(entry));
  return at::from_blob(
      data, entry.shape, [keep_alive](void*) mutable { keep_alive.reset(); },
      at::TensorOptions().dtype(ToScalarType(entry.dtype)).device(at::kCPU));
}

}  // namespace atelier::engine
