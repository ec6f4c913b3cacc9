// `atelier convert`: any checkpoint (pickle or safetensors) to safetensors, optionally to fp16, so users can
// leave pickles behind. The source's SHA-256 is recorded in the new file's metadata.
#pragma once

#include <cstdint>
#include <filesystem>

#include "absl/status/statusor.h"

namespace atelier::engine {

struct ConvertOptions {
  bool fp16 = false;  // float32/float64 tensors become float16 (bfloat16 and integers are kept)
};

struct ConvertReport {
  std::int64_t tensors = 0;
  std::int64_t bytes_written = 0;
  std::string source_format;
  std::string source_sha256;
};

absl::StatusOr<ConvertReport> ConvertToSafetensors(const std::filesystem::path& input,
                                                   const std::filesystem::path& output, const ConvertOptions& options);

}  // namespace atelier::engine
