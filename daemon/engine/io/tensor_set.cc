#include "engine/io/tensor_set.h"

#include "absl/strings/str_cat.h"

namespace atelier::engine {

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

absl::StatusOr<DType> FromScalarType(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::kF64;
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    case at::kInt: return DType::kI32;
    case at::kShort: return DType::kI16;
    case at::kChar: return DType::kI8;
    case at::kByte: return DType::kU8;
    case at::kBool: return DType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", std::string(c10::toString(type)), " has no safetensors equivalent"));
  }
}

TensorIndex IndexOf(const TensorSet& set) {
  TensorIndex index;
  index.format = set.format;
  index.metadata = set.metadata;
  for (const auto& [name, tensor] : set.tensors) {
    auto dtype = FromScalarType(tensor.scalar_type());
    index.tensors.push_back({name, dtype.ok() ? *dtype : DType::kF32, tensor.sizes().vec()});
  }
  index.Build();
  return index;
}

}  // namespace atelier::engine
