#include "engine/upscale/image_upscaler.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/models/nn_util.h"
#include "engine/upscale/pil_resize.h"

namespace atelier::engine {
namespace {

// Pillow's paste with an L mask, per byte: DIV255(dst·(255 − m) + src·m).
at::Tensor Blend(const at::Tensor& dst, const at::Tensor& src, const at::Tensor& mask) {
  const at::Tensor m = mask.to(at::kInt);
  const at::Tensor t = dst.to(at::kInt) * (255 - m) + src.to(at::kInt) * m + 128;
  return ((t.bitwise_right_shift(8) + t).bitwise_right_shift(8)).to(at::kByte);
}

// Pastes `src` [h, w, 3] at column `x` of `canvas` [H, W, 3] (rows aligned), clipped; blended with `mask` [w] per
// column when given.
void PasteColumns(at::Tensor& canvas, const at::Tensor& src, int64_t x, const at::Tensor& mask) {
  const int64_t begin = std::max<int64_t>(0, x), end = std::min<int64_t>(canvas.size(1), x + src.size(1));
  if (end <= begin) return;
  at::Tensor region = canvas.slice(1, begin, end);
  const at::Tensor part = src.slice(1, begin - x, end - x);
  if (mask.defined()) {
    region.copy_(Blend(region, part, mask.slice(0, begin - x, end - x).view({1, -1, 1})));
  } else {
    region.copy_(part);
  }
}

// The same for rows.
void PasteRows(at::Tensor& canvas, const at::Tensor& src, int64_t y, const at::Tensor& mask) {
  const int64_t begin = std::max<int64_t>(0, y), end = std::min<int64_t>(canvas.size(0), y + src.size(0));
  if (end <= begin) return;
  at::Tensor region = canvas.slice(0, begin, end);
  const at::Tensor part = src.slice(0, begin - y, end - y);
  if (mask.defined()) {
    region.copy_(Blend(region, part, mask.slice(0, begin - y, end - y).view({-1, 1, 1})));
  } else {
    region.copy_(part);
  }
}

// images.split_grid's positions along one axis: ceil((size − overlap) / (tile − overlap)) tiles spread evenly, the
// last one flush with the end (negative when the image is smaller than a tile).
std::vector<int64_t> TilePositions(int64_t size, int64_t tile, int64_t overlap) {
  const auto count = static_cast<int64_t>(std::ceil(static_cast<double>(size - overlap) / static_cast<double>(tile - overlap)));
  const double step = count > 1 ? static_cast<double>(size - tile) / static_cast<double>(count - 1) : 0.0;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < count; ++i) {
    auto p = static_cast<int64_t>(static_cast<double>(i) * step);
    if (p + tile >= size) p = size - tile;
    out.push_back(p);
  }
  return out;
}

// PIL's crop: a tile x tile window, black outside the image.
at::Tensor Crop(const at::Tensor& rgb, int64_t x, int64_t y, int64_t tile) {
  at::Tensor out = at::zeros({tile, tile, rgb.size(2)}, rgb.options());
  const int64_t x0 = std::max<int64_t>(0, x), y0 = std::max<int64_t>(0, y);
  const int64_t x1 = std::min(rgb.size(1), x + tile), y1 = std::min(rgb.size(0), y + tile);
  if (x1 > x0 && y1 > y0) out.slice(0, y0 - y, y1 - y).slice(1, x0 - x, x1 - x).copy_(rgb.slice(0, y0, y1).slice(1, x0, x1));
  return out;
}

// make_mask_image: value i = uint8(float32(i) · 255 / overlap).
at::Tensor OverlapMask(int64_t overlap) {
  return (at::arange(overlap, at::kFloat) * 255 / static_cast<float>(overlap)).to(at::kByte);
}

class ResizeUpscaler final : public ImageUpscaler {
 public:
  enum class Mode { kNone, kLanczos, kNearest };
  ResizeUpscaler(std::string name, Mode mode) : name_(std::move(name)), mode_(mode) {}
  const std::string& name() const override { return name_; }
  absl::StatusOr<at::Tensor> Pass(const at::Tensor& rgb, double scale, const UpscaleStop&) const override {
    if (mode_ == Mode::kNone) return rgb;
    const auto w = static_cast<int64_t>(static_cast<double>(rgb.size(1)) * scale);
    const auto h = static_cast<int64_t>(static_cast<double>(rgb.size(0)) * scale);
    if (mode_ == Mode::kLanczos) return PilResizeLanczos(rgb, w, h);
    try {  // PIL's NEAREST samples at pixel centres: floor((x + 0.5) · in / out), F.interpolate's nearest-exact
      const at::Tensor x = rgb.permute({2, 0, 1}).unsqueeze(0);
      return at::_upsample_nearest_exact2d(x.to(at::kFloat), {h, w}).round().to(at::kByte)[0].permute({1, 2, 0}).contiguous();
    } catch (const std::exception& e) {
      return StatusFromException(e, "resizing");
    }
  }

 private:
  std::string name_;
  Mode mode_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ImageUpscaler>> BuiltinUpscaler(const std::string& name) {
  if (name == "None") return std::make_unique<ResizeUpscaler>(name, ResizeUpscaler::Mode::kNone);
  if (name == "Lanczos") return std::make_unique<ResizeUpscaler>(name, ResizeUpscaler::Mode::kLanczos);
  if (name == "Nearest") return std::make_unique<ResizeUpscaler>(name, ResizeUpscaler::Mode::kNearest);
  return absl::NotFoundError(absl::StrCat("no built-in upscaler ", name));
}

absl::StatusOr<at::Tensor> RunNetOnImage(const EsrganNet& net, const at::Tensor& rgb, const at::Device& device) {
  try {
    // NCHW-contiguous: a permuted (channels-last) input would carry its layout through every conv.
    const at::Tensor x = rgb.flip({2}).permute({2, 0, 1}).contiguous().to(device).to(at::kFloat).div(255).unsqueeze(0);
    at::Tensor y = net.Forward(x);
    y = (y[0].to(at::kCPU).to(at::kFloat).clamp(0, 1) * 255).round().to(at::kByte);
    return y.permute({1, 2, 0}).flip({2}).contiguous();
  } catch (const std::exception& e) {
    return StatusFromException(e, "running the upscaler");
  }
}

absl::StatusOr<at::Tensor> UpscaleTiled(const at::Tensor& rgb, const TileOptions& tiles,
                                        const std::function<absl::StatusOr<at::Tensor>(const at::Tensor&)>& run,
                                        const UpscaleStop& stop) {
  const int64_t h = rgb.size(0), w = rgb.size(1), tile = tiles.tile, overlap = tiles.overlap;
  if (tile <= 0 || overlap < 1 || overlap >= tile || w <= overlap || h <= overlap) return run(rgb);
  try {
    const std::vector<int64_t> xs = TilePositions(w, tile, overlap), ys = TilePositions(h, tile, overlap);
    at::Tensor combined;
    int64_t s = 0;
    at::Tensor mask;
    for (const int64_t y : ys) {
      at::Tensor row;
      for (const int64_t x : xs) {
        if (stop && stop()) return absl::CancelledError("upscale interrupted");
        auto out = run(Crop(rgb, x, y, tile));
        if (!out.ok()) return out.status();
        if (s == 0) {
          s = out->size(1) / tile;
          if (s < 1 || out->size(0) != tile * s || out->size(1) != tile * s) {
            return absl::InternalError("the upscaler's tile came back with a size that is no multiple of the tile");
          }
          combined = at::zeros({h * s, w * s, 3}, at::kByte);
          mask = OverlapMask(overlap * s);
        }
        if (!row.defined()) row = at::zeros({tile * s, w * s, 3}, at::kByte);
        if (x == 0) {
          PasteColumns(row, *out, 0, at::Tensor());
          continue;
        }
        PasteColumns(row, out->slice(1, 0, overlap * s), x * s, mask);
        PasteColumns(row, out->slice(1, overlap * s), (x + overlap) * s, at::Tensor());
      }
      if (y == 0) {
        PasteRows(combined, row, 0, at::Tensor());
        continue;
      }
      PasteRows(combined, row.slice(0, 0, overlap * s), y * s, mask);
      PasteRows(combined, row.slice(0, overlap * s), (y + overlap) * s, at::Tensor());
    }
    return combined;
  } catch (const std::exception& e) {
    return StatusFromException(e, "combining the upscaled tiles");
  }
}

ModelUpscaler::ModelUpscaler(std::string name, std::shared_ptr<const EsrganNet> net, at::Device device,
                             TileOptions tiles)
    : name_(std::move(name)), net_(std::move(net)), device_(device), tiles_(tiles) {}

absl::StatusOr<at::Tensor> ModelUpscaler::Pass(const at::Tensor& rgb, double, const UpscaleStop& stop) const {
  return UpscaleTiled(
      rgb, tiles_, [this](const at::Tensor& tile) { return RunNetOnImage(*net_, tile, device_); }, stop);
}

absl::StatusOr<at::Tensor> UpscaleBy(const ImageUpscaler& upscaler, const at::Tensor& rgb, double scale, int max_side,
                                     const UpscaleStop& stop) {
  if (!std::isfinite(scale) || scale <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("upscale factor ", scale, " must be a number above 0"));
  }
  const auto dest_w = static_cast<int64_t>(std::floor(static_cast<double>(rgb.size(1)) * scale / 8) * 8);
  const auto dest_h = static_cast<int64_t>(std::floor(static_cast<double>(rgb.size(0)) * scale / 8) * 8);
  if (dest_w < 8 || dest_h < 8 || dest_w > max_side || dest_h > max_side) {
    return absl::InvalidArgumentError(absl::StrCat("upscaling ", rgb.size(1), "x", rgb.size(0), " by ", scale, " gives ",
                                                   dest_w, "x", dest_h, "; the result must be 8 to ", max_side,
                                                   " pixels a side"));
  }
  at::Tensor img = rgb;
  for (int i = 0; i < 3; ++i) {
    if (img.size(1) >= dest_w && img.size(0) >= dest_h && (i > 0 || scale != 1)) break;
    if (stop && stop()) return absl::CancelledError("upscale interrupted");
    const auto before = img.sizes().vec();
    auto next = upscaler.Pass(img, scale, stop);
    if (!next.ok()) return next.status();
    img = *std::move(next);
    if (img.sizes().vec() == before) break;
  }
  if (img.size(1) != dest_w || img.size(0) != dest_h) return PilResizeLanczos(img, dest_w, dest_h);
  return img;
}

absl::StatusOr<at::Tensor> ResizeWithUpscaler(const ImageUpscaler* upscaler, const at::Tensor& rgb, int64_t width,
                                              int64_t height, int max_side, const UpscaleStop& stop) {
  at::Tensor img = rgb;
  const double scale = std::max(static_cast<double>(width) / static_cast<double>(rgb.size(1)),
                                static_cast<double>(height) / static_cast<double>(rgb.size(0)));
  if (upscaler != nullptr && upscaler->name() != "None" && scale > 1.0) {
    auto up = UpscaleBy(*upscaler, img, scale, max_side, stop);
    if (!up.ok()) return up.status();
    img = *std::move(up);
  }
  if (img.size(1) != width || img.size(0) != height) return PilResizeLanczos(img, width, height);
  return img;
}

}  // namespace atelier::engine
