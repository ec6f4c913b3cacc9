#include "engine/models/checkpoint_loader.h"

#include <ATen/Functions.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include <cstring>
#include "engine/io/tensor_file.h"
#include "engine/io/weight_arena.h"
#include "engine/models/weight_layout.h"
#include "util/log.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

constexpr const char* kUnetPrefix = "model.diffusion_model.";
constexpr const char* kVaePrefix = "first_stage_model.";
constexpr const char* kClipPrefix = "cond_stage_model.transformer.";

// Floating-point weights go to the compute dtype and device; integer buffers (position_ids) keep their dtype.
at::ScalarType TargetType(const at::Tensor& t, const LoadOptions& options) {
  return at::isFloatingType(t.scalar_type()) ? options.dtype : t.scalar_type();
}

// Converts the tensors of one load. On the CPU, tensors that must change go into one huge-page arena (see
// weight_arena.h); tensors already in the right dtype stay zero-copy views of the file.
class Converter {
 public:
  // `file_mapped`: the inputs view a read-only file mapping (safetensors), whose pages can be dropped once copied.
  Converter(const LoadOptions& options, const std::vector<const at::Tensor*>& inputs, bool file_mapped = false)
      : options_(options), file_mapped_(file_mapped) {
    if (options_.device != "cpu") return;
    std::size_t bytes = 0;
    for (const at::Tensor* t : inputs) {
      if (t->scalar_type() != TargetType(*t, options_)) bytes += WeightArena::Footprint(t->sizes(), TargetType(*t, options_));
    }
    if (bytes > 0) {
      // Once anything converts, everything is copied: a few same-dtype tensors left as views of the file (the
      // schedule buffers, position_ids) would keep the whole mapping, every page of it touched by the conversion,
      // resident beside the converted weights (2.1 GB for an fp16 SD 1.5 file).
      copy_all_ = true;
      for (const at::Tensor* t : inputs) {
        if (t->scalar_type() == TargetType(*t, options_)) bytes += WeightArena::Footprint(t->sizes(), t->scalar_type());
      }
      auto arena = WeightArena::Create(bytes);
      if (arena.ok()) arena_ = *std::move(arena);
    }
  }

  // `layout`: the memory format the copy takes (channels-last for the UNet's k x k convolutions).
  at::Tensor operator()(const at::Tensor& t, at::MemoryFormat layout = at::MemoryFormat::Contiguous) {
    const at::ScalarType target = TargetType(t, options_);
    if (options_.device == "cpu" && arena_ != nullptr && (t.scalar_type() != target || copy_all_)) {
      at::Tensor out = arena_->Allocate(t.sizes(), target);
      if (out.defined()) {
        if (layout == at::MemoryFormat::ChannelsLast) {  // the same bytes, channels-last strides
          const int64_t c = t.size(1), h = t.size(2), w = t.size(3);
          out = out.as_strided(t.sizes(), {c * h * w, 1, w * c, c});
        }
        out.copy_(t);
        // The copy replaces the file's pages: drop them from this process now, or every page the load touched
        // stays resident beside the arena until the mapping closes (the load's peak RSS, 2.1 GB for SD 1.5 fp16).
        // Safe for a read-only file mapping: a later read faults the same bytes back in from the file.
        if (file_mapped_) DropPages(t);
        return out;
      }
    }
    return t.to(at::Device(options_.device), target).contiguous(layout);
  }

 private:
  static void DropPages(const at::Tensor& t) {
    const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<std::uintptr_t>(t.data_ptr());
    const std::uintptr_t end = begin + static_cast<std::uintptr_t>(t.numel() * t.element_size());
    const std::uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
    if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }

  const LoadOptions& options_;
  const bool file_mapped_;
  std::shared_ptr<WeightArena> arena_;
  bool copy_all_ = false;
};

std::int64_t Bytes(const WeightMap& map) {
  std::int64_t total = 0;
  for (const auto& [name, t] : map) total += static_cast<std::int64_t>(t.numel()) * t.element_size();
  return total;
}

}  // namespace

at::Tensor ComputeAlphasCumprod(const ScheduleConfig& s) {
  at::Tensor betas = at::linspace(std::sqrt(s.linear_start), std::sqrt(s.linear_end), s.timesteps,
                                  at::TensorOptions().dtype(at::kDouble))
                         .pow(2);
  return at::cumprod(betas.neg().add(1.0), 0).to(at::kFloat);
}

at::Tensor ComputeLinearBetaAlphasCumprod(double beta_start, double beta_end, int64_t timesteps) {
  const at::Tensor betas = at::linspace(beta_start, beta_end, timesteps, at::TensorOptions().dtype(at::kFloat));
  return at::cumprod(betas.neg().add(1.0), 0);
}

absl::StatusOr<WeightMap> LoadVaeFile(const fs::path& path, const VaeConfig& config, const LoadOptions& options) {
  auto set = ReadTensorSet(path);
  if (!set.ok()) return set.status();
  const TensorIndex index = IndexOf(*set);
  auto layout = DetectLayout(index, path.filename().string());
  if (!layout.ok()) return layout.status();
  if (layout->type != ModelType::kVae) {
    return absl::InvalidArgumentError(absl::StrCat("'", path.filename().string(), "' is ", layout->architecture,
                                                   ", not a VAE"));
  }
  if (auto s = CheckVaeConfig(config, index, layout->variant, path.filename().string(), "the checkpoint's VAE config");
      !s.ok()) {
    return s;
  }
  std::vector<std::pair<std::string, const at::Tensor*>> kept;
  for (const auto& [name, tensor] : set->tensors) {
    if (!absl::StartsWith(name, layout->variant)) continue;
    const std::string key = name.substr(layout->variant.size());
    if (absl::StartsWith(key, "loss") || absl::StartsWith(key, "model_ema.")) continue;
    kept.emplace_back(key, &tensor);
  }
  std::vector<const at::Tensor*> inputs;
  for (const auto& k : kept) inputs.push_back(k.second);
  Converter convert(options, inputs);
  WeightMap vae;
  for (const auto& [key, tensor] : kept) vae[key] = convert(*tensor, VaeWeightLayout(*tensor, options.dtype));
  return vae;
}

absl::StatusOr<WeightMap> LoadCheckpointVae(const fs::path& path, const LoadOptions& options) {
  auto set = ReadTensorSet(path);
  if (!set.ok()) return set.status();
  std::vector<std::pair<std::string, const at::Tensor*>> kept;
  for (const auto& [raw_name, tensor] : set->tensors) {
    const std::string name = NormalizeSd1Key(raw_name);
    if (absl::StartsWith(name, kVaePrefix)) kept.emplace_back(name.substr(std::strlen(kVaePrefix)), &tensor);
  }
  if (kept.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path.filename().string(), "' has no VAE (first_stage_model.*)"));
  }
  std::vector<const at::Tensor*> inputs;
  for (const auto& k : kept) inputs.push_back(k.second);
  try {
    Converter convert(options, inputs);
    WeightMap vae;
    for (const auto& [key, tensor] : kept) vae[key] = convert(*tensor, VaeWeightLayout(*tensor, options.dtype));
    return vae;
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("loading the VAE of '", path.filename().string(), "' failed: ", e.what()));
  }
}

std::int64_t ResidentBytes(const Sd1Weights& w) { return Bytes(w.unet) + Bytes(w.vae) + Bytes(w.text_encoder); }

absl::StatusOr<std::shared_ptr<const Sd1Weights>> LoadSd1Checkpoint(const fs::path& path, const std::string& filename,
                                                                    const fs::path& vae_file,
                                                                    const LoadOptions& options) {
  const absl::Time start = absl::Now();
  const std::string label = path.filename().string();
  auto set = ReadTensorSet(path);
  if (!set.ok()) return set.status();
  TensorIndex index = IndexOf(*set);
  auto layout = DetectLayout(index, label);
  if (!layout.ok()) return layout.status();
  if (layout->type != ModelType::kSd1Checkpoint) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' is ", layout->architecture,
                                                   ", not a Stable Diffusion checkpoint"));
  }
  if (layout->old_clip_naming) {
    for (auto& t : index.tensors) t.name = NormalizeSd1Key(t.name);
    index.Build();
  }
  auto config = ResolveSd1Config(path, index, *layout);
  if (!config.ok()) return config.status();

  auto weights = std::make_shared<Sd1Weights>();
  weights->filename = filename;
  weights->layout = *layout;
  weights->config = *config;
  weights->device = options.device;
  weights->dtype = options.dtype;
  try {
    // Which tensors each component takes (a separate VAE file replaces the checkpoint's).
    struct Pick {
      WeightMap* map;
      std::string key;
      const at::Tensor* tensor;
    };
    std::vector<Pick> picks;
    for (const auto& [raw_name, tensor] : set->tensors) {
      const std::string name = NormalizeSd1Key(raw_name);
      if (absl::StartsWith(name, kUnetPrefix)) {
        picks.push_back({&weights->unet, name.substr(std::strlen(kUnetPrefix)), &tensor});
      } else if (absl::StartsWith(name, kVaePrefix) && vae_file.empty()) {
        picks.push_back({&weights->vae, name.substr(std::strlen(kVaePrefix)), &tensor});
      } else if (absl::StartsWith(name, kClipPrefix)) {
        picks.push_back({&weights->text_encoder, name.substr(std::strlen(kClipPrefix)), &tensor});
      }
    }
    std::vector<const at::Tensor*> inputs;
    for (const Pick& p : picks) inputs.push_back(p.tensor);
    Converter convert(options, inputs, set->format == "safetensors");
    for (const Pick& p : picks) {
      const at::MemoryFormat layout = p.map == &weights->unet  ? PreferredWeightLayout(*p.tensor)
                                      : p.map == &weights->vae ? VaeWeightLayout(*p.tensor, options.dtype)
                                                               : at::MemoryFormat::Contiguous;
      (*p.map)[p.key] = convert(*p.tensor, layout);
    }
    for (const auto& [raw_name, tensor] : set->tensors) {
      const std::string name = NormalizeSd1Key(raw_name);
      if (name == "alphas_cumprod") {
        // Kept float32, as WebUI does; a copy, never a view that would keep the whole file mapping resident.
        weights->alphas_cumprod = tensor.to(at::kFloat).clone();
      }
    }
    if (!weights->alphas_cumprod.defined()) weights->alphas_cumprod = ComputeAlphasCumprod(config->schedule);
    if (!vae_file.empty()) {
      auto vae = LoadVaeFile(vae_file, config->vae, options);
      if (!vae.ok()) return vae.status();
      weights->vae = *std::move(vae);
      weights->vae_source = vae_file.filename().string();
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("loading '", label, "' failed: ", e.what()));
  }
  if (weights->vae.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' has no VAE (first_stage_model.*); choose a VAE file"));
  }
  if (weights->text_encoder.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "' has no text encoder (cond_stage_model.transformer.*)"));
  }
  weights->resident_bytes = ResidentBytes(*weights);
  weights->load_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return std::shared_ptr<const Sd1Weights>(std::move(weights));
}

}  // namespace atelier::engine
