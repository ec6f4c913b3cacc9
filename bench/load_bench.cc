// Loading a full-size SD1.5 checkpoint (F16 safetensors, 2.1 GB, the real tensor names and shapes from
// ../shared/manifests/sd15-ldm.json, zero weights) from the page cache:
//   BM_MapAndIndex      mmap + header validation + zero-copy views (what "ready tensors" costs)
//   BM_LoadToFloat32    the whole load: identify, resolve and check the config, convert F16 -> F32 once
//   BM_MemcpyBaseline   copying the same number of bytes in this process: the yardstick for the two above
// The file is written once to $ATELIER_BENCH_DIR (default /tmp) and reused.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/models/checkpoint_loader.h"
#include "engine/models/runtime.h"
#include "engine/io/safetensors_writer.h"
#include "engine/io/tensor_file.h"

namespace {
namespace fs = std::filesystem;

fs::path Checkpoint() {
  static const fs::path path = [] {
    const char* dir = std::getenv("ATELIER_BENCH_DIR");
    fs::path p = fs::path(dir != nullptr ? dir : "/tmp") / "atelier-bench-sd15-f16.safetensors";
    if (fs::exists(p)) return p;
    (void)atelier::engine::InitRuntime({"cpu", 0});
    const auto manifest = nlohmann::json::parse(std::ifstream(fs::path(ATELIER_SOURCE_DIR) / "../shared/manifests/sd15-ldm.json"));
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [name, shape] : manifest["tensors"].items()) {
      const auto dims = shape.get<std::vector<std::int64_t>>();
      tensors.emplace_back(name, name.find("position_ids") != std::string::npos ? at::zeros(dims, at::kLong)
                                                                                : at::zeros(dims, at::kHalf));
    }
    if (!atelier::engine::WriteSafetensors(p, tensors, {{"format", "pt"}}).ok()) std::abort();
    return p;
  }();
  return path;
}

void WarmPageCache(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buffer(1 << 24);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()))) {
  }
}

void BM_MapAndIndex(benchmark::State& state) {
  const fs::path path = Checkpoint();
  WarmPageCache(path);
  for (auto _ : state) {
    auto set = atelier::engine::ReadTensorSet(path);
    if (!set.ok()) state.SkipWithError(std::string(set.status().message()).c_str());
    benchmark::DoNotOptimize(set);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(fs::file_size(path)));
}
BENCHMARK(BM_MapAndIndex)->Unit(benchmark::kMillisecond);

void BM_LoadToFloat32(benchmark::State& state) {
  const fs::path path = Checkpoint();
  (void)atelier::engine::InitRuntime({"cpu", 0});
  WarmPageCache(path);
  for (auto _ : state) {
    auto weights = atelier::engine::LoadSd1Checkpoint(path, path.filename().string(), {}, atelier::engine::LoadOptions());
    if (!weights.ok()) state.SkipWithError(std::string(weights.status().message()).c_str());
    benchmark::DoNotOptimize(weights);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(fs::file_size(path)));
}
BENCHMARK(BM_LoadToFloat32)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_MemcpyBaseline(benchmark::State& state) {
  const std::size_t bytes = fs::file_size(Checkpoint());
  std::vector<char> from(bytes, 1), to(bytes);
  for (auto _ : state) {
    std::memcpy(to.data(), from.data(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_MemcpyBaseline)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
