// WebUI-compatible seeds and latent noise (A1111 modules/rng.py, modules/rng_philox.py): the "Random number
// generator source" choices, one generator per image, variation seeds (subseed + strength via WebUI's slerp),
// "Resize seed from" and "Eta noise seed delta" (ENSD). A batch is bit-identical to making each image alone.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atelier::engine {

// WebUI's randn_source setting.
enum class NoiseSource {
  kGpu,  // "GPU": torch's generator of the device. On CUDA, a CUDA generator; on a CPU device, the NV emulation
         // (it reproduces CUDA's randn, so CPU users get NVIDIA WebUI users' noise; WebUI itself would use the
         // CPU generator there); on MPS the CPU generator, as WebUI does.
  kCpu,  // "CPU": torch's CPU generator (mt19937), moved to the device.
  kNv,   // "NV": WebUI's numpy Philox4x32-10 emulation of CUDA torch.randn, moved to the device.
};

// "GPU", "CPU" or "NV", case-insensitively; anything else is INVALID_ARGUMENT listing them.
absl::StatusOr<NoiseSource> ParseNoiseSource(absl::string_view name);
// WebUI's spelling: "GPU", "CPU", "NV".
const char* NoiseSourceName(NoiseSource source);

// One image's generator: successive Randn calls continue its stream. Returns float32 on the generator's device.
// Throws c10::Error on libtorch failures (ImageRng turns them into statuses).
class NoiseGenerator {
 public:
  virtual ~NoiseGenerator() = default;
  virtual at::Tensor Randn(at::IntArrayRef shape) = 0;
};

// A generator seeded with `seed` (torch's manual_seed semantics: the CPU generator uses the low 32 bits, the
// Philox key all 64). FAILED_PRECONDITION when `device` is CUDA and libtorch has no CUDA.
absl::StatusOr<std::unique_ptr<NoiseGenerator>> CreateNoiseGenerator(NoiseSource source, uint64_t seed,
                                                                     at::Device device);

// WebUI's slerp of two [C, H, W] noise tensors, quirks included: vectors are normalised along dim 1 (H, for every
// channel and column), and when mean(dot) > 0.9995 it returns low * val + high * (1 - val) (weights reversed).
at::Tensor Slerp(double val, const at::Tensor& low, const at::Tensor& high);

// WebUI's seed -1: uniform in [0, 4294967293].
int64_t RandomSeed();

// The per-image seeds of a job with `images` images (all batches), as WebUI's process_images makes them: seed -1
// (and subseed -1) become RandomSeed(); image i gets seed + i, or seed itself for every image when a variation
// strength is set; subseeds are subseed + i.
struct JobSeeds {
  std::vector<int64_t> seeds, subseeds;
};
JobSeeds AllSeeds(int64_t seed, int64_t subseed, double subseed_strength, int images);

struct NoiseOptions {
  std::vector<int64_t> shape;      // one image's latent [C, H, W], e.g. {4, height / 8, width / 8}
  std::vector<int64_t> seeds;      // one per image
  std::vector<int64_t> subseeds;   // one per image; used when subseed_strength > 0
  double subseed_strength = 0;     // [0, 1]
  int seed_resize_from_h = 0;      // pixels; resizing is on when both are > 0
  int seed_resize_from_w = 0;
  int64_t eta_noise_seed_delta = 0;
  NoiseSource source = NoiseSource::kGpu;
  at::Device device = at::kCPU;
};

// INVALID_ARGUMENT (naming the valid range) for a bad shape, no seeds, a subseed_strength outside [0, 1] or NaN,
// subseeds not one per seed when the strength is > 0, or a resize size that is negative or under 8 pixels.
absl::Status ValidateNoiseOptions(const NoiseOptions& options);

// WebUI's ImageRNG.
class ImageRng {
 public:
  static absl::StatusOr<ImageRng> Create(NoiseOptions options);

  // The initial latent noise [B, C, H, W]: per image the first draw of its seed, with variation seed and seed
  // resize applied. Afterwards, with ENSD != 0, every generator is replaced by one seeded with seed + ENSD.
  // Call it once, first.
  absl::StatusOr<at::Tensor> First();
  // The next draw [B, C, H, W], one Randn(shape) per image (the noise ancestral samplers add per step). Called
  // before First(), it makes (and discards) the initial noise first, so the stream is the same either way.
  absl::StatusOr<at::Tensor> Next();

  const NoiseOptions& options() const { return options_; }

 private:
  explicit ImageRng(NoiseOptions options) : options_(std::move(options)) {}
  absl::StatusOr<at::Tensor> FirstImpl();

  NoiseOptions options_;
  std::vector<std::unique_ptr<NoiseGenerator>> generators_;
  bool first_done_ = false;
};

}  // namespace atelier::engine
