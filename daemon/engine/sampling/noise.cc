#include "engine/sampling/noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <mutex>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/nn_util.h"
#include "engine/sampling/philox.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace {

constexpr char kSourceChoices[] = "GPU, CPU, NV";
// Philox's element index is a 32-bit counter word; this keeps far below it (and below absurd allocations).
constexpr int64_t kMaxElements = int64_t{1} << 30;

std::string Upper(absl::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::toupper(c); });
  return out;
}

// torch's own generator (CPU mt19937 or CUDA Philox): at::randn with it reproduces torch.randn exactly.
class TorchNoiseGenerator final : public NoiseGenerator {
 public:
  TorchNoiseGenerator(at::Generator gen, at::Device gen_device, at::Device out_device)
      : gen_(std::move(gen)), gen_device_(gen_device), out_device_(out_device) {}
  at::Tensor Randn(at::IntArrayRef shape) override {
    const auto options = at::TensorOptions().dtype(at::kFloat).device(gen_device_);
    return at::randn(shape, gen_, options).to(out_device_);
  }

 private:
  at::Generator gen_;
  at::Device gen_device_, out_device_;
};

// rng_philox.Generator: the offset counts randn calls.
class PhiloxNoiseGenerator final : public NoiseGenerator {
 public:
  PhiloxNoiseGenerator(uint64_t seed, at::Device device) : seed_(seed), device_(device) {}
  at::Tensor Randn(at::IntArrayRef shape) override {
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
    PhiloxRandn(seed_, offset_++, out.numel(), out.data_ptr<float>());
    return out.to(device_);
  }

 private:
  uint64_t seed_;
  uint32_t offset_ = 0;
  at::Device device_;
};

// torch.Generator('cuda').manual_seed(seed), without CUDA headers (libtorch may be CPU-only): a clone of the
// device's default generator, re-seeded (set_current_seed also resets the Philox offset).
at::Generator NewCudaGenerator(at::Device device, uint64_t seed) {
  at::Generator def = at::globalContext().defaultGenerator(device);
  at::Generator gen;
  {
    std::lock_guard<std::mutex> lock(def.mutex());
    gen = def.clone();
  }
  gen.set_current_seed(seed);
  return gen;
}

// seed + delta with int64 wrap-around (torch's manual_seed takes the value modulo 2^64 anyway).
uint64_t SeedOf(int64_t seed, int64_t delta = 0) {
  return static_cast<uint64_t>(seed) + static_cast<uint64_t>(delta);
}

}  // namespace

absl::StatusOr<NoiseSource> ParseNoiseSource(absl::string_view name) {
  const std::string n = Upper(name);
  if (n == "GPU") return NoiseSource::kGpu;
  if (n == "CPU") return NoiseSource::kCpu;
  if (n == "NV") return NoiseSource::kNv;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown random number generator source ", Quoted(name, "\"", "\""), "; choose one of: ", kSourceChoices));
}

const char* NoiseSourceName(NoiseSource source) {
  switch (source) {
    case NoiseSource::kGpu: return "GPU";
    case NoiseSource::kCpu: return "CPU";
    case NoiseSource::kNv: return "NV";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<NoiseGenerator>> CreateNoiseGenerator(NoiseSource source, uint64_t seed,
                                                                     at::Device device) {
  if (device.is_cuda() && !at::hasCUDA()) {
    return absl::FailedPreconditionError("noise on a CUDA device, but this libtorch has no CUDA");
  }
  try {
    if (source == NoiseSource::kGpu && device.is_cuda()) {
      return std::unique_ptr<NoiseGenerator>(new TorchNoiseGenerator(NewCudaGenerator(device, seed), device, device));
    }
    // WebUI forces the CPU generator on MPS.
    if (source == NoiseSource::kCpu || (source == NoiseSource::kGpu && device.is_mps())) {
      return std::unique_ptr<NoiseGenerator>(
          new TorchNoiseGenerator(at::detail::createCPUGenerator(seed), at::kCPU, device));
    }
    return std::unique_ptr<NoiseGenerator>(new PhiloxNoiseGenerator(seed, device));
  } catch (const std::exception& e) {
    return StatusFromException(e, "creating a noise generator");
  }
}

at::Tensor Slerp(double val, const at::Tensor& low, const at::Tensor& high) {
  const at::Tensor low_norm = low / low.norm(2, at::IntArrayRef{1}, /*keepdim=*/true);
  const at::Tensor high_norm = high / high.norm(2, at::IntArrayRef{1}, /*keepdim=*/true);
  const at::Tensor dot = (low_norm * high_norm).sum(1);
  if (dot.mean().item<double>() > 0.9995) return low * val + high * (1 - val);  // sic (WebUI)
  const at::Tensor omega = at::acos(dot);
  const at::Tensor so = at::sin(omega);
  return (at::sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (at::sin(val * omega) / so).unsqueeze(1) * high;
}

int64_t RandomSeed() {
  std::random_device device;
  std::mt19937_64 engine((static_cast<uint64_t>(device()) << 32) ^ device());
  return std::uniform_int_distribution<int64_t>(0, 4294967293)(engine);
}

JobSeeds AllSeeds(int64_t seed, int64_t subseed, double subseed_strength, int images) {
  if (seed == -1) seed = RandomSeed();
  if (subseed == -1) subseed = RandomSeed();
  JobSeeds out;
  for (int i = 0; i < images; ++i) {
    out.seeds.push_back(seed + (subseed_strength == 0 ? i : 0));
    out.subseeds.push_back(subseed + i);
  }
  return out;
}

absl::Status ValidateNoiseOptions(const NoiseOptions& o) {
  const bool shape_ok = o.shape.size() == 3 && std::all_of(o.shape.begin(), o.shape.end(), [](int64_t d) {
                          return d >= 1 && d <= kMaxElements;
                        }) && o.shape[0] * o.shape[1] <= kMaxElements && o.shape[0] * o.shape[1] * o.shape[2] <= kMaxElements;
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrCat("noise shape [", absl::StrJoin(o.shape, ", "),
                                                   "] must be [channels, height, width], each >= 1, at most ",
                                                   kMaxElements, " elements"));
  }
  if (o.seeds.empty()) return absl::InvalidArgumentError("noise needs at least one seed (one per image)");
  if (!(o.subseed_strength >= 0 && o.subseed_strength <= 1)) {  // also NaN
    return absl::InvalidArgumentError(
        absl::StrCat("subseed_strength ", o.subseed_strength, " is outside the range [0, 1]"));
  }
  if (o.subseed_strength > 0 && o.subseeds.size() != o.seeds.size()) {
    return absl::InvalidArgumentError(absl::StrCat("variation seeds need one subseed per seed: ", o.seeds.size(),
                                                   " seeds, ", o.subseeds.size(), " subseeds"));
  }
  for (const int v : {o.seed_resize_from_h, o.seed_resize_from_w}) {
    if (v < 0 || (v > 0 && v < 8) || v > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("seed resize size ", v,
                                                     " must be 0 (off) or between 8 and 1048576 pixels"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ImageRng> ImageRng::Create(NoiseOptions options) {
  if (auto s = ValidateNoiseOptions(options); !s.ok()) return s;
  ImageRng rng(std::move(options));
  for (const int64_t seed : rng.options_.seeds) {
    auto gen = CreateNoiseGenerator(rng.options_.source, SeedOf(seed), rng.options_.device);
    if (!gen.ok()) return gen.status();
    rng.generators_.push_back(*std::move(gen));
  }
  return rng;
}

absl::StatusOr<at::Tensor> ImageRng::First() {
  try {
    return FirstImpl();
  } catch (const std::exception& e) {
    return StatusFromException(e, "making the initial noise");
  }
}

absl::StatusOr<at::Tensor> ImageRng::FirstImpl() {
  const NoiseOptions& o = options_;
  const std::vector<int64_t>& shape = o.shape;
  std::vector<int64_t> noise_shape = shape;
  if (o.seed_resize_from_h > 0 && o.seed_resize_from_w > 0) {
    noise_shape = {shape[0], o.seed_resize_from_h / 8, o.seed_resize_from_w / 8};
  }
  const bool resize = noise_shape != shape;
  // A one-off draw from a fresh generator (WebUI's randn(seed, shape) without a generator).
  auto fresh = [&](uint64_t seed) -> absl::StatusOr<at::Tensor> {
    auto gen = CreateNoiseGenerator(o.source, seed, o.device);
    if (!gen.ok()) return gen.status();
    return (*gen)->Randn(noise_shape);
  };

  std::vector<at::Tensor> xs;
  for (size_t i = 0; i < o.seeds.size(); ++i) {
    at::Tensor subnoise;
    if (o.subseed_strength != 0) {
      auto s = fresh(SeedOf(o.subseeds[i]));
      if (!s.ok()) return s.status();
      subnoise = *s;
    }
    at::Tensor noise;
    if (resize) {
      auto s = fresh(SeedOf(o.seeds[i]));
      if (!s.ok()) return s.status();
      noise = *s;
    } else {
      noise = generators_[i]->Randn(shape);
    }
    if (subnoise.defined()) noise = Slerp(o.subseed_strength, noise, subnoise);
    if (resize) {
      // Paste the centre-aligned overlap (Python floor division; a larger source is cropped).
      at::Tensor x = generators_[i]->Randn(shape);
      auto floor_half = [](int64_t d) { return d >= 0 ? d / 2 : -((-d + 1) / 2); };
      int64_t dx = floor_half(shape[2] - noise_shape[2]);
      int64_t dy = floor_half(shape[1] - noise_shape[1]);
      const int64_t w = dx >= 0 ? noise_shape[2] : noise_shape[2] + 2 * dx;
      const int64_t h = dy >= 0 ? noise_shape[1] : noise_shape[1] + 2 * dy;
      const int64_t tx = std::max<int64_t>(dx, 0), ty = std::max<int64_t>(dy, 0);
      dx = std::max<int64_t>(-dx, 0);
      dy = std::max<int64_t>(-dy, 0);
      x.narrow(1, ty, h).narrow(2, tx, w).copy_(noise.narrow(1, dy, h).narrow(2, dx, w));
      noise = x;
    }
    xs.push_back(noise);
  }

  if (o.eta_noise_seed_delta != 0) {
    for (size_t i = 0; i < o.seeds.size(); ++i) {
      auto gen = CreateNoiseGenerator(o.source, SeedOf(o.seeds[i], o.eta_noise_seed_delta), o.device);
      if (!gen.ok()) return gen.status();
      generators_[i] = *std::move(gen);
    }
  }
  first_done_ = true;
  return at::stack(xs);
}

absl::StatusOr<at::Tensor> ImageRng::Next() {
  if (!first_done_) {
    if (auto first = First(); !first.ok()) return first.status();
  }
  try {
    std::vector<at::Tensor> xs;
    for (auto& gen : generators_) xs.push_back(gen->Randn(options_.shape));
    return at::stack(xs);
  } catch (const std::exception& e) {
    return StatusFromException(e, "making noise");
  }
}

}  // namespace atelier::engine
