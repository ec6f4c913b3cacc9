#include "engine/models/runtime.h"

#include "engine/models/onednn_matmul.h"

#include "engine/models/cpu_allocator.h"

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/version.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace atelier::engine {
namespace {

// The BLAS libraries this process loaded, by real path (Debian switches them with update-alternatives; libtorch
// links both libblas.so.3 and libopenblas.so.0, which must resolve to the same OpenBLAS build).
std::vector<std::string> LoadedBlasPaths() {
  std::vector<std::string> found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (absl::StrContains(name, "libblas.so") || absl::StrContains(name, "libopenblas")) {
          char resolved[PATH_MAX];
          static_cast<std::vector<std::string>*>(data)->push_back(realpath(name.c_str(), resolved) ? resolved : name);
        }
        return 0;
      },
      &found);
  return found;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "CPU";
}

// Reads "Key:   1234 kB" from a /proc file.
std::int64_t ReadProcKiB(const char* path, absl::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key) && line.size() > key.size() && line[key.size()] == ':') {
      absl::string_view rest = absl::StripAsciiWhitespace(absl::string_view(line).substr(key.size() + 1));
      rest = absl::StripSuffix(rest, "kB");
      std::int64_t kib = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) return kib * 1024;
    }
  }
  return 0;
}

// CUDA figures through the runtime libtorch already loaded, so the CPU build needs no CUDA headers.
void ReadCudaMemory(int index, MemoryFigures& out) {
  using SetDevice = int (*)(int);
  using MemGetInfo = int (*)(size_t*, size_t*);
  auto set_device = reinterpret_cast<SetDevice>(dlsym(RTLD_DEFAULT, "cudaSetDevice"));
  auto mem_get_info = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
  if (set_device == nullptr || mem_get_info == nullptr) return;
  size_t free_bytes = 0, total_bytes = 0;
  if (set_device(index) == 0 && mem_get_info(&free_bytes, &total_bytes) == 0) {
    out.device_free_bytes = static_cast<std::int64_t>(free_bytes);
    out.device_total_bytes = static_cast<std::int64_t>(total_bytes);
  }
}

std::string CudaDeviceName(int index) {
  using GetName = int (*)(char*, int, int);
  auto get_name = reinterpret_cast<GetName>(dlsym(RTLD_DEFAULT, "cuDeviceGetName"));
  char name[256] = {0};
  if (get_name != nullptr && get_name(name, sizeof(name), index) == 0) return name;
  return absl::StrCat("CUDA device ", index);
}

int DeviceIndex(const std::string& device) {
  const auto colon = device.find(':');
  int index = 0;
  if (colon != std::string::npos && !absl::SimpleAtoi(device.substr(colon + 1), &index)) return -1;
  return index;
}

}  // namespace

std::string TorchVersion() { return TORCH_VERSION; }

CpuFeatures DetectCpuFeatures() {
  CpuFeatures cpu;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, "flags")) continue;
    for (absl::string_view flag : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      cpu.avx2 |= flag == "avx2";
      cpu.avx512f |= flag == "avx512f";
      cpu.avx512bw |= flag == "avx512bw";
      cpu.avx512vl |= flag == "avx512vl";
      cpu.avx512dq |= flag == "avx512dq";
      cpu.avx512_bf16 |= flag == "avx512_bf16";
      cpu.amx_bf16 |= flag == "amx_bf16";
    }
    break;
  }
  return cpu;
}

bool CpuBf16Supported(const CpuFeatures& cpu) { return cpu.avx512bw && cpu.avx512vl && cpu.avx512dq; }
bool CpuBf16Native(const CpuFeatures& cpu) { return CpuBf16Supported(cpu) && (cpu.avx512_bf16 || cpu.amx_bf16); }

std::string CpuFeatureList(const CpuFeatures& cpu) {
  std::vector<std::string> names;
  const std::pair<bool, const char*> flags[] = {
      {cpu.avx2, "avx2"},         {cpu.avx512f, "avx512f"},         {cpu.avx512bw, "avx512bw"},
      {cpu.avx512vl, "avx512vl"}, {cpu.avx512dq, "avx512dq"},       {cpu.avx512_bf16, "avx512_bf16"},
      {cpu.amx_bf16, "amx_bf16"},
  };
  for (const auto& [present, name] : flags) {
    if (present) names.push_back(name);
  }
  return names.empty() ? "none of avx2/avx512/amx" : absl::StrJoin(names, " ");
}

absl::StatusOr<ComputeDtype> ResolveComputeDtype(const std::string& requested, const std::string& device,
                                                 const CpuFeatures& cpu) {
  const bool cuda = absl::StartsWith(device, "cuda");
  if (requested == "auto") {
    if (cuda) return ComputeDtype{"float16", "auto: float16 on CUDA"};
    if (CpuBf16Native(cpu)) {
      return ComputeDtype{"bfloat16", absl::StrCat("auto: this CPU has ", cpu.amx_bf16 ? "AMX-BF16" : "AVX512_BF16",
                                                   " (~2x float32's speed; --dtype float32 for WebUI's exact numbers)")};
    }
    return ComputeDtype{"float32", CpuBf16Supported(cpu)
                                       ? "auto: this CPU lacks AVX512_BF16 and AMX-BF16, so bfloat16 would not be faster"
                                       : "auto: this CPU lacks AVX-512 (BW/VL/DQ) for bfloat16"};
  }
  if (requested == "float32") return ComputeDtype{requested, "--dtype float32"};
  if (requested == "float16") {
    if (!cuda) {
      return absl::InvalidArgumentError(
          "--dtype float16 is for CUDA; on the CPU use auto (default), float32 or bfloat16");
    }
    return ComputeDtype{requested, "--dtype float16"};
  }
  if (requested == "bfloat16") {
    if (!cuda && !CpuBf16Supported(cpu)) {
      std::vector<std::string> missing;
      if (!cpu.avx512bw) missing.push_back("avx512bw");
      if (!cpu.avx512vl) missing.push_back("avx512vl");
      if (!cpu.avx512dq) missing.push_back("avx512dq");
      return absl::FailedPreconditionError(absl::StrCat(
          "--dtype bfloat16 needs a CPU with AVX-512 BW/VL/DQ (AVX512_BF16 or AMX-BF16 to be fast); this one lacks ",
          absl::StrJoin(missing, ", "), ", so libtorch would compute bfloat16 slowly and inaccurately. Use --dtype "
          "float32 or auto"));
    }
    return ComputeDtype{requested, CpuBf16Native(cpu) || cuda ? "--dtype bfloat16"
                                                              : "--dtype bfloat16 (this CPU emulates bf16 dot products: "
                                                                "slower than float32)"};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --dtype '", requested, "'; valid: auto, float32, bfloat16, float16"));
}

absl::StatusOr<RuntimeInfo> InitRuntime(const RuntimeOptions& options) {
  RuntimeInfo info;
  info.torch_version = TorchVersion();

  const std::string& device = options.device;
  if (device == "cpu") {
    info.device = "cpu";
    info.device_name = CpuModelName();
  } else if (device == "cuda" || absl::StartsWith(device, "cuda:")) {
    const int index = DeviceIndex(device);
    if (index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", device, "'; use cpu, cuda or cuda:N"));
    }
    const int count = at::detail::getCUDAHooks().getNumGPUs();
    if (!at::detail::getCUDAHooks().hasCUDA() || count == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device ", device, " asked for CUDA, but this libtorch (", info.torch_version,
          ") has no CUDA support or sees no GPU; use --device cpu or build against a CUDA libtorch"));
    }
    if (index >= count) {
      return absl::FailedPreconditionError(
          absl::StrCat("--device ", device, ": only ", count, " CUDA device(s) present (cuda:0..cuda:", count - 1, ")"));
    }
    info.device = absl::StrCat("cuda:", index);
    info.device_name = CudaDeviceName(index);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown device '", device, "'; valid: cpu, cuda, cuda:N"));
  }

  if (options.cpu_cache_bytes > 0) InstallCachingCpuAllocator(options.cpu_cache_bytes);

  int threads = options.threads;
  // OMP_NUM_THREADS, as PyTorch and OpenBLAS honour it: processes that share the cores (ctest -j, several daemons)
  // each take their share instead of spin-waiting on each other's cores.
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); threads <= 0 && omp != nullptr) {
    int parsed = 0;
    if (absl::SimpleAtoi(omp, &parsed) && parsed > 0) threads = parsed;
  }
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  at::set_num_threads(threads);
  info.threads = at::get_num_threads();

  // OpenBLAS runs its own thread pool; keep it to the same count so the two do not oversubscribe the cores.
  using SetBlasThreads = void (*)(int);
  using GetBlasConfig = char* (*)();
  if (auto set_blas_threads = reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_blas_threads(threads);
  }
  const std::vector<std::string> blas_paths = LoadedBlasPaths();
  const std::string blas_path = absl::StrJoin(blas_paths, ", ");
  const bool pthread_build = absl::StrContains(blas_path, "openblas-pthread");
  const bool openmp_build = absl::StrContains(blas_path, "openblas-openmp");
  if (auto get_config = reinterpret_cast<GetBlasConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
      get_config != nullptr && absl::StrContains(blas_path, "openblas") && !absl::StrContains(blas_path, "/blas/")) {
    info.blas = absl::StrCat(get_config(), openmp_build && !pthread_build ? ", OpenMP build" : "", " (", blas_path, ")");
    // The pthread build's own threads contend with libtorch's OpenMP pool (3.5x slower text encoder on 2 cores).
    info.blas_is_fast = openmp_build && !pthread_build;
  } else {
    info.blas = blas_path.empty() ? "unknown" : blas_path;
    info.blas_is_fast = false;
  }
  if (info.device == "cpu" && OneDnnAvailable()) {
    // oneDNN initialises itself lazily, in a once-only routine inside its first parallel primitive, which crashes
    // (SIGSEGV) when an allocation fails there: under memory pressure that first job would take the daemon down
    // instead of failing. One small product now runs that initialisation while memory is plentiful.
    at::Tensor a = at::ones({16, 16}), out = at::empty({16, 16});
    (void)OneDnnMatmul(a, a, out);
  }
  return info;
}

namespace {
class RecordedOpProfile final : public OpProfile {
 public:
  explicit RecordedOpProfile(const std::string& path) : record_(path) {}

 private:
  torch::autograd::profiler::RecordProfile record_;
};
}  // namespace

std::unique_ptr<OpProfile> MaybeProfile(const std::string& name) {
  const char* dir = std::getenv("ATELIER_PROFILE_DIR");
  if (dir == nullptr || *dir == '\0') return nullptr;
  return std::make_unique<RecordedOpProfile>(absl::StrCat(dir, "/", name, ".json"));
}

void ReleaseThreadPoolOfThisThread() {
  // Through dlsym: libgomp comes with libtorch; the engine itself is not built with -fopenmp.
  using PauseAll = int (*)(int);
  static const auto pause_all = reinterpret_cast<PauseAll>(dlsym(RTLD_DEFAULT, "omp_pause_resource_all"));
  if (pause_all != nullptr) (void)pause_all(/*omp_pause_soft=*/1);
}

MemoryFigures ReadMemoryFigures(const std::string& device) {
  MemoryFigures out;
  out.process_rss_bytes = ReadProcKiB("/proc/self/status", "VmRSS");
  out.system_total_bytes = ReadProcKiB("/proc/meminfo", "MemTotal");
  out.system_available_bytes = ReadProcKiB("/proc/meminfo", "MemAvailable");
  if (absl::StartsWith(device, "cuda")) ReadCudaMemory(std::max(0, DeviceIndex(device)), out);
  return out;
}

}  // namespace atelier::engine
