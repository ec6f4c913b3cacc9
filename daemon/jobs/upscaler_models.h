// The upscaler models jobs use (hires fix's "Hires upscaler", the Upscale request), loaded from their files once
// and kept while they are used again: the last two files stay in memory. Executor thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/upscale/esrgan_net.h"
#include "engine/upscale/image_upscaler.h"
#include "engine/upscale/upscaler_catalog.h"

namespace atelier::jobs {

class UpscalerModels {
 public:
  // The upscaler of a catalog entry: a built-in, or the entry's file loaded onto `device` and tiled with `tiles`.
  // INVALID_ARGUMENT for a file that is no ESRGAN-family net (naming it).
  absl::StatusOr<std::shared_ptr<const engine::ImageUpscaler>> Get(const engine::UpscalerEntry& entry,
                                                                   const engine::TileOptions& tiles,
                                                                   const at::Device& device);
  void Clear() { loaded_.clear(); }

 private:
  struct Loaded {
    std::string key;  // path, size, mtime, device
    std::shared_ptr<const engine::EsrganNet> net;
  };
  std::vector<Loaded> loaded_;  // most recently used last
};

}  // namespace atelier::jobs
