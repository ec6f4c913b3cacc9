// Process-wide compute runtime: device selection, thread counts, BLAS check, memory figures.
// No libtorch types in this header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::engine {

struct RuntimeOptions {
  // "cpu" or "cuda" / "cuda:N".
  std::string device = "cpu";
  // Intra-op threads; <= 0 means OMP_NUM_THREADS when set, else every online core.
  int threads = 0;
  // Free CPU blocks kept for reuse by the caching allocator (engine/models/cpu_allocator.h); 0 leaves libtorch's
  // own allocator in place. 256 MiB serves SD 1.5's steps as fast as 1 GiB did (bf16 and fp32 at 512x512) while the
  // serving daemon's peak RSS is 300 MB (bf16) to 760 MB (fp32) lower: beyond the activations' own blocks, a larger
  // cache mostly holds oneDNN's per-call weight reorder buffers.
  std::int64_t cpu_cache_bytes = std::int64_t{256} << 20;
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

// Instruction-set features of the CPU (from /proc/cpuinfo).
struct CpuFeatures {
  bool avx2 = false, avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, amx_bf16 = false;
};
CpuFeatures DetectCpuFeatures();
// Whether libtorch runs bfloat16 convolutions and matmuls through oneDNN here (it needs AVX-512 BW/VL/DQ). Without
// them its bf16 fallback is slow and accumulates in bf16, several percent off float32.
bool CpuBf16Supported(const CpuFeatures& cpu);
// Whether the CPU has native bf16 dot products (AVX512_BF16 or AMX), where bf16 is ~1.7-2x faster than float32.
bool CpuBf16Native(const CpuFeatures& cpu);

// The instruction-set flags of `cpu` that decide the dtype, e.g. "avx2 avx512f ... amx_bf16" (for logs and info RPCs).
std::string CpuFeatureList(const CpuFeatures& cpu);

struct ComputeDtype {
  std::string dtype;   // "float32", "bfloat16" or "float16"
  std::string reason;  // why, for the start-up log and DaemonInfo, e.g. "auto: this CPU has AMX-BF16"
};
// The compute dtype for `requested` ("auto", "float32", "bfloat16", "float16") on `device` with `cpu`'s features.
// auto is float16 on CUDA, bfloat16 on CPUs with native bf16 dot products (AVX512_BF16 or AMX-BF16 beside
// AVX-512 BW/VL/DQ: oneDNN runs every conv and matmul there ~2x faster than float32, accumulating in float32) and
// float32 elsewhere (WebUI's numbers; bf16 emulation would be slower). INVALID_ARGUMENT names the valid choices;
// FAILED_PRECONDITION when the CPU cannot run bfloat16 properly, naming the missing features.
absl::StatusOr<ComputeDtype> ResolveComputeDtype(const std::string& requested, const std::string& device,
                                                 const CpuFeatures& cpu);

// Configures libtorch (and OpenBLAS) threads and checks the device. Call once at start-up, before any model code.
// FAILED_PRECONDITION when CUDA is asked for but not available; INVALID_ARGUMENT for an unknown device string.
absl::StatusOr<RuntimeInfo> InitRuntime(const RuntimeOptions& options);

// A libtorch op profile of what this thread runs while the object lives, written as a chrome://tracing file
// (bench/profile_ops.py sums it per op). Null unless the environment variable ATELIER_PROFILE_DIR names a folder:
// then the file is ATELIER_PROFILE_DIR/<name>.json. A developer's tool: the daemon profiles each job this way.
class OpProfile {
 public:
  virtual ~OpProfile() = default;
};
std::unique_ptr<OpProfile> MaybeProfile(const std::string& name);

// Frees the OpenMP thread pool of the calling thread (its workers exit). libgomp keeps one pool per thread that
// ever ran a parallel region, and once its threads outnumber the cores it spins only ~100 iterations before
// sleeping: every parallel region of the compute thread then pays futex wake-ups (a served bf16 UNet step was
// 1.4x the benchmark's, 25k context switches a second). Call it on threads that ran libtorch work once (start-up
// loading) and will not again, so the executor's pool is the only one.
void ReleaseThreadPoolOfThisThread();

// Current memory figures (device figures only for CUDA devices).
MemoryFigures ReadMemoryFigures(const std::string& device);

// The libtorch version the engine was built with.
std::string TorchVersion();

}  // namespace atelier::engine
