#include "engine/tensor_file.h"

#include "absl/strings/str_cat.h"
#include "engine/tensor_view.h"
#include "engine/torch_checkpoint.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

enum class Format { kSafetensors, kTorch, kUnknown };

// By content, not extension: zip ("PK"), safetensors (JSON header opening at byte 8), legacy pickle (0x80).
Format Detect(absl::string_view bytes) {
  if (LooksLikeZip(bytes)) return Format::kTorch;
  if (bytes.size() >= 9 && bytes[8] == '{') return Format::kSafetensors;
  if (LooksLikeLegacyPickle(bytes)) return Format::kTorch;
  return Format::kUnknown;
}

absl::Status Unknown(const fs::path& path) {
  return absl::InvalidArgumentError(absl::StrCat("'", path.filename().string(),
                                                 "' is neither safetensors nor a PyTorch checkpoint (zip or legacy "
                                                 "pickle)"));
}

absl::StatusOr<std::shared_ptr<const MappedFile>> MapRegularFile(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path.string(), "' is a directory, not a checkpoint file"));
  }
  return MappedFile::Map(path);
}

}  // namespace

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

absl::StatusOr<TensorIndex> ReadTensorIndex(const fs::path& path) {
  auto mapping = MapRegularFile(path);
  if (!mapping.ok()) return mapping.status();
  const absl::string_view bytes = (*mapping)->bytes();
  const std::string label = path.filename().string();
  switch (Detect(bytes)) {
    case Format::kSafetensors: {
      auto header = ParseSafetensors(bytes, label);
      if (!header.ok()) return header.status();
      TensorIndex index;
      index.format = "safetensors";
      for (const TensorEntry& t : header->tensors) index.tensors.push_back({t.name, t.dtype, t.shape});
      index.metadata = header->metadata;
      index.Build();
      return index;
    }
    case Format::kTorch:
      return ReadTorchIndex(bytes, label);
    case Format::kUnknown:
      break;
  }
  return Unknown(path);
}

absl::StatusOr<TensorSet> ReadTensorSet(const fs::path& path) {
  auto mapping = MapRegularFile(path);
  if (!mapping.ok()) return mapping.status();
  const absl::string_view bytes = (*mapping)->bytes();
  switch (Detect(bytes)) {
    case Format::kSafetensors: {
      auto file = SafetensorsFile::Open(path);
      if (!file.ok()) return file.status();
      TensorSet set;
      set.format = "safetensors";
      set.metadata = (*file)->metadata();
      for (const TensorEntry& t : (*file)->tensors()) set.tensors.emplace_back(t.name, TensorView(*file, t));
      return set;
    }
    case Format::kTorch:
      return ReadTorchTensors(bytes, path.filename().string());
    case Format::kUnknown:
      break;
  }
  return Unknown(path);
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
