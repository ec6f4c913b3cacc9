#include "engine/models/checkpoint_convert.h"

#include "absl/strings/str_cat.h"
#include "engine/io/file_hash.h"
#include "engine/io/safetensors_writer.h"
#include "engine/io/tensor_file.h"

namespace atelier::engine {
namespace fs = std::filesystem;

absl::StatusOr<ConvertReport> ConvertToSafetensors(const fs::path& input, const fs::path& output,
                                                   const ConvertOptions& options) {
  std::error_code ec;
  if (fs::exists(output, ec) && fs::equivalent(input, output, ec)) {
    return absl::InvalidArgumentError("the output would overwrite the input");
  }
  auto set = ReadTensorSet(input);
  if (!set.ok()) return set.status();
  auto sha256 = Sha256File(input);
  if (!sha256.ok()) return sha256.status();
  ConvertReport report;
  report.source_format = set->format;
  report.source_sha256 = *sha256;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  tensors.reserve(set->tensors.size());
  for (auto& [name, tensor] : set->tensors) {
    const bool narrow = options.fp16 && (tensor.scalar_type() == at::kFloat || tensor.scalar_type() == at::kDouble);
    tensors.emplace_back(name, narrow ? tensor.to(at::kHalf) : tensor);
    report.bytes_written += static_cast<std::int64_t>(tensors.back().second.numel()) *
                            tensors.back().second.element_size();
  }
  report.tensors = static_cast<std::int64_t>(tensors.size());
  std::map<std::string, std::string> metadata = set->metadata;
  metadata["format"] = "pt";
  metadata["atelier.converted_from"] = input.filename().string();
  metadata["atelier.source_format"] = set->format;
  metadata["atelier.source_sha256"] = *sha256;
  if (options.fp16) metadata["atelier.dtype"] = "fp16";
  if (auto s = WriteSafetensors(output, tensors, metadata); !s.ok()) return s;
  return report;
}

}  // namespace atelier::engine
