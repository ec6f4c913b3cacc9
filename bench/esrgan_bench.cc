// ESRGAN-family upscaling speed (issue 22), in one run on this machine: a 4x upscale of a 512x512 RGB image with
// Real-ESRGAN's RRDBNet in the x4plus_anime_6B shape (6 blocks, 64 features, 32 growth; random weights), untiled and
// with WebUI's tiling (192 px tiles, 8 px overlap), beside BasicSR's own RRDBNet (the net Real-ESRGAN's inference
// builds) on Debian's python3-torch (bench/esrgan_peer.py with /usr/bin/python3; set ATELIER_ESRGAN_PEER to a
// BasicSR checkout, skipped otherwise): ratio = ours / peer, untiled against untiled. ATELIER_ESRGAN_SIZE changes
// the side (default 512).
//   build/bench/atelier_bench --benchmark_filter=Esrgan
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/models/runtime.h"
#include "engine/upscale/esrgan_net.h"
#include "engine/upscale/image_upscaler.h"

namespace atelier {
namespace {
namespace fs = std::filesystem;

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// BasicSR key names, random weights in the released x4plus_anime_6B shapes.
std::map<std::string, at::Tensor> Anime6BWeights() {
  std::map<std::string, at::Tensor> w;
  at::manual_seed(0);
  // PyTorch's default Conv2d initialisation (uniform within 1/sqrt(fan_in)), as the peer's net has: activations keep
  // their scale through the 100+ convs (tiny weights would make them denormal and time the CPU's slow path).
  const auto conv = [&w](const std::string& name, int64_t out, int64_t in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in * 9));
    w[name + ".weight"] = (at::rand({out, in, 3, 3}) * 2 - 1) * bound;
    w[name + ".bias"] = (at::rand({out}) * 2 - 1) * bound;
  };
  conv("conv_first", 64, 3);
  for (int n = 0; n < 6; ++n) {
    for (int r = 1; r <= 3; ++r) {
      for (int c = 1; c <= 5; ++c) conv(absl::StrCat("body.", n, ".rdb", r, ".conv", c), c == 5 ? 64 : 32, 64 + (c - 1) * 32);
    }
  }
  for (const char* name : {"conv_body", "conv_up1", "conv_up2", "conv_hr"}) conv(name, 64, 64);
  conv("conv_last", 3, 64);
  return w;
}

void BM_EsrganUpscale4x(benchmark::State& state) {
  (void)engine::InitRuntime({"cpu", 0});  // threads = cores, OpenBLAS pinned, as the daemon runs
  auto net = engine::EsrganNet::FromTensors(Anime6BWeights(), "anime6B-shape");
  if (!net.ok()) {
    state.SkipWithError(std::string(net.status().message()).c_str());
    return;
  }
  const char* size_env = std::getenv("ATELIER_ESRGAN_SIZE");
  const int size = size_env != nullptr ? std::atoi(size_env) : 512;
  const at::Tensor image = at::randint(0, 256, {size, size, 3}, at::kByte);
  std::shared_ptr<const engine::EsrganNet> shared = *std::move(net);
  (void)engine::RunNetOnImage(*shared, image.slice(0, 0, 64).slice(1, 0, 64), at::kCPU);  // warm-up
  double untiled = 0;
  for (auto _ : state) untiled += Seconds([&] { benchmark::DoNotOptimize(engine::RunNetOnImage(*shared, image, at::kCPU)); });
  untiled /= static_cast<double>(state.iterations());
  const engine::ModelUpscaler tiled_upscaler("bench", shared, at::kCPU, engine::TileOptions{192, 8});
  const double tiled = Seconds([&] { benchmark::DoNotOptimize(tiled_upscaler.Pass(image, 4.0, nullptr)); });
  state.counters["size"] = size;
  state.counters["untiled_s"] = untiled;
  state.counters["tiled_192_8_s"] = tiled;
  if (const char* peer = std::getenv("ATELIER_ESRGAN_PEER")) {
    const fs::path out = fs::temp_directory_path() / "atelier-esrgan-peer.json";
    const std::string cmd = absl::StrCat("/usr/bin/python3 ", ATELIER_SOURCE_DIR, "/bench/esrgan_peer.py --basicsr ", peer,
                                         " --blocks 6 --size ", size, " > ", out.string());
    if (std::system(cmd.c_str()) == 0) {
      std::ifstream in(out);
      const auto j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded() && j.contains("seconds")) {
        state.counters["peer_s"] = j["seconds"].get<double>();
        state.counters["ratio_vs_peer"] = untiled / j["seconds"].get<double>();
      }
    }
  }
}
BENCHMARK(BM_EsrganUpscale4x)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
}  // namespace atelier
