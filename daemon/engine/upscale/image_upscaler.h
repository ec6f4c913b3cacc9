// Image-space upscaling as WebUI does it (modules/upscaler.py, upscaler_utils.py, images.py):
//  - a model pass on tiles (split_grid: ESRGAN_tile x ESRGAN_tile tiles spread evenly with at least
//    ESRGAN_tile_overlap pixels in common; combine_grid: each tile's first `overlap` columns / rows blended over the
//    previous one with Pillow's mask arithmetic, the rest pasted), the model fed BGR in [0, 1] and its output
//    rounded half to even;
//  - Upscaler.upscale: up to three passes until floor8(w·scale) x floor8(h·scale) is reached, then PIL's Lanczos
//    to exactly that size;
//  - images.resize_image: an upscaler only when the target is larger, then Lanczos to the exact target.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/upscale/esrgan_net.h"

namespace atelier::engine {

struct TileOptions {
  int tile = 192;    // ESRGAN_tile (0: the whole image at once)
  int overlap = 8;   // ESRGAN_tile_overlap
};

// Called between tiles: true stops the upscale (CANCELLED). May be empty.
using UpscaleStop = std::function<bool()>;

class ImageUpscaler {
 public:
  virtual ~ImageUpscaler() = default;
  virtual const std::string& name() const = 0;
  // One do_upscale: uint8 RGB [H, W, 3] -> [H·s, W·s, 3] for a model of scale s; `scale` is the factor asked of
  // Upscaler.upscale (what the built-in Lanczos / Nearest resize by).
  virtual absl::StatusOr<at::Tensor> Pass(const at::Tensor& rgb, double scale, const UpscaleStop& stop) const = 0;
};

// An ESRGAN-family net run tile by tile on the device, in float32.
class ModelUpscaler final : public ImageUpscaler {
 public:
  // `net` must already be on `device`.
  ModelUpscaler(std::string name, std::shared_ptr<const EsrganNet> net, at::Device device, TileOptions tiles);
  const std::string& name() const override { return name_; }
  absl::StatusOr<at::Tensor> Pass(const at::Tensor& rgb, double scale, const UpscaleStop& stop) const override;
  const std::shared_ptr<const EsrganNet>& net() const { return net_; }
  const at::Device& device() const { return device_; }
  const TileOptions& tiles() const { return tiles_; }

 private:
  std::string name_;
  std::shared_ptr<const EsrganNet> net_;
  at::Device device_;
  TileOptions tiles_;
};

// WebUI's built-in image upscalers: "None" (no pass; Lanczos to the size), "Lanczos" and "Nearest" (PIL resizes
// by the factor asked). NOT_FOUND for any other name.
absl::StatusOr<std::unique_ptr<ImageUpscaler>> BuiltinUpscaler(const std::string& name);

// upscale_pil_patch: the net on one uint8 RGB image, untiled.
absl::StatusOr<at::Tensor> RunNetOnImage(const EsrganNet& net, const at::Tensor& rgb, const at::Device& device);

// upscale_with_model: split_grid, the net per tile, combine_grid (exact Pillow arithmetic). `run` maps one uint8
// RGB tile [t, t, 3] to [t·s, t·s, 3].
absl::StatusOr<at::Tensor> UpscaleTiled(const at::Tensor& rgb, const TileOptions& tiles,
                                        const std::function<absl::StatusOr<at::Tensor>(const at::Tensor&)>& run,
                                        const UpscaleStop& stop);

// Upscaler.upscale(img, scale): the size WebUI ends at is floor8(w·scale) x floor8(h·scale). INVALID_ARGUMENT for a
// scale that is not finite or not above 0, or a result outside 8..max_side.
absl::StatusOr<at::Tensor> UpscaleBy(const ImageUpscaler& upscaler, const at::Tensor& rgb, double scale, int max_side,
                                     const UpscaleStop& stop);

// images.resize_image(0, img, width, height, upscaler): the upscaler (null or "None": Lanczos only) when the target
// is larger than the image, then Lanczos to exactly width x height.
absl::StatusOr<at::Tensor> ResizeWithUpscaler(const ImageUpscaler* upscaler, const at::Tensor& rgb, int64_t width,
                                              int64_t height, int max_side, const UpscaleStop& stop);

}  // namespace atelier::engine
