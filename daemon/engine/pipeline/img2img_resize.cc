#include "engine/pipeline/img2img_resize.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/models/nn_util.h"

namespace atelier::engine {
namespace {

// uint8 HWC -> resized uint8 HWC (antialiased bicubic, rounded and clamped).
at::Tensor Resample(const at::Tensor& image, int64_t width, int64_t height) {
  if (image.size(0) == height && image.size(1) == width) return image;
  const at::Tensor x = image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  const at::Tensor y = at::_upsample_bicubic2d_aa(x, {height, width}, /*align_corners=*/false);
  return y.round().clamp(0, 255).to(at::kByte).squeeze(0).permute({1, 2, 0}).contiguous();
}

}  // namespace

absl::StatusOr<at::Tensor> ResizeInitImage(const at::Tensor& image, ResizeMode mode, int width, int height) {
  if (!image.defined() || image.dim() != 3 || image.size(2) != 3 || image.size(0) < 1 || image.size(1) < 1 ||
      image.scalar_type() != at::kByte) {
    return absl::InvalidArgumentError("the init image must be 8-bit RGB [height, width, 3]");
  }
  try {
    const int64_t iw = image.size(1), ih = image.size(0);
    const double ratio = static_cast<double>(width) / height;
    const double src_ratio = static_cast<double>(iw) / ih;
    switch (mode) {
      case ResizeMode::kJustResize:
        return Resample(image, width, height);
      case ResizeMode::kLatentUpscale: {
        const int64_t w8 = iw / 8 * 8, h8 = ih / 8 * 8;
        if (w8 < 8 || h8 < 8) return absl::InvalidArgumentError("the init image is smaller than 8x8 pixels");
        return image.slice(0, 0, h8).slice(1, 0, w8).contiguous();
      }
      case ResizeMode::kCropAndResize: {
        const int64_t src_w = ratio > src_ratio ? width : iw * height / ih;
        const int64_t src_h = ratio <= src_ratio ? height : ih * width / iw;
        const at::Tensor resized = Resample(image, src_w, src_h);
        // Paste at (width/2 - src_w/2, height/2 - src_h/2): the overflow is cropped equally on both sides.
        const int64_t x0 = src_w / 2 - width / 2, y0 = src_h / 2 - height / 2;
        return resized.slice(0, y0, y0 + height).slice(1, x0, x0 + width).contiguous();
      }
      case ResizeMode::kResizeAndFill: {
        const int64_t src_w = ratio < src_ratio ? width : iw * height / ih;
        const int64_t src_h = ratio >= src_ratio ? height : ih * width / iw;
        const at::Tensor resized = Resample(image, std::max<int64_t>(src_w, 1), std::max<int64_t>(src_h, 1));
        const int64_t x0 = width / 2 - src_w / 2, y0 = height / 2 - src_h / 2;
        at::Tensor out = at::zeros({height, width, 3}, at::kByte);
        out.slice(0, y0, y0 + resized.size(0)).slice(1, x0, x0 + resized.size(1)).copy_(resized);
        // The bands: the first/last row (column) of the resized image stretched over them, as PIL's resize of a
        // zero-height (zero-width) box does.
        if (ratio < src_ratio && y0 > 0) {
          out.slice(0, 0, y0).copy_(resized.slice(0, 0, 1).expand({y0, width, 3}));
          const int64_t rest = height - (y0 + resized.size(0));
          if (rest > 0) out.slice(0, y0 + resized.size(0)).copy_(resized.slice(0, -1).expand({rest, width, 3}));
        } else if (ratio > src_ratio && x0 > 0) {
          out.slice(1, 0, x0).copy_(resized.slice(1, 0, 1).expand({height, x0, 3}));
          const int64_t rest = width - (x0 + resized.size(1));
          if (rest > 0) out.slice(1, x0 + resized.size(1)).copy_(resized.slice(1, -1).expand({height, rest, 3}));
        }
        return out;
      }
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, "resizing the init image");
  }
  return absl::InvalidArgumentError(absl::StrCat("resize_mode ", static_cast<int>(mode),
                                                 " is not one of 0 Just resize, 1 Crop and resize, 2 Resize and "
                                                 "fill, 3 Just resize (latent upscale)"));
}

}  // namespace atelier::engine
