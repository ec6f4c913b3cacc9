// Process-wide compute runtime: device selection, thread counts, BLAS check, memory figures.
// No libtorch types in this header.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::engine {

struct RuntimeOptions {
  // "cpu" or "cuda" / "cuda:N".
  std::string device = "cpu";
  // Intra-op threads; <= 0 means every online core.
  int threads = 0;
};

struct RuntimeInfo {
  std::string device;       // "cpu" or "cuda:N"
  std::string device_name;  // CPU model or GPU name
  int threads = 0;
  std::string blas;         // e.g. "OpenBLAS 0.3.21 ..." or the library path
  bool blas_is_fast = false;  // false for Debian's reference BLAS
  std::string torch_version;
};

struct MemoryFigures {
  std::int64_t process_rss_bytes = 0;
  std::int64_t system_total_bytes = 0;
  std::int64_t system_available_bytes = 0;
  std::int64_t device_total_bytes = 0;
  std::int64_t device_free_bytes = 0;
};

// Configures libtorch (and OpenBLAS) threads and checks the device. Call once at start-up, before any model code.
// FAILED_PRECONDITION when CUDA is asked for but not available; INVALID_ARGUMENT for an unknown device string.
absl::StatusOr<RuntimeInfo> InitRuntime(const RuntimeOptions& options);

// Current memory figures (device figures only for CUDA devices).
MemoryFigures ReadMemoryFigures(const std::string& device);

// The libtorch version the engine was built with.
std::string TorchVersion();

}  // namespace atelier::engine
