#include "engine/io/tensor_file.h"

#include "absl/strings/str_cat.h"
#include "engine/io/tensor_view.h"
#include "engine/io/torch_checkpoint.h"

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


}  // namespace atelier::engine
