#include "jobs/live_preview.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

namespace atelier::jobs {
namespace {

// WebUI's image_grid layout for previews of a batch: rows = the largest divisor of n not above sqrt(n).
at::Tensor Grid(const at::Tensor& images) {  // uint8 [B, H, W, 3] -> [rows * H, cols * W, 3]
  const int64_t n = images.size(0);
  if (n == 1) return images[0];
  int64_t rows = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
  while (rows > 1 && n % rows != 0) --rows;
  const int64_t cols = (n + rows - 1) / rows;
  const int64_t h = images.size(1), w = images.size(2);
  return images.reshape({rows, cols, h, w, 3}).permute({0, 2, 1, 3, 4}).reshape({rows * h, cols * w, 3});
}

// Shrinks uint8 HWC so that its longer side is at most max_size (antialiased), keeping the aspect.
at::Tensor Bounded(const at::Tensor& image, int max_size) {
  const int64_t h = image.size(0), w = image.size(1);
  if (std::max(h, w) <= max_size) return image;
  const double scale = static_cast<double>(max_size) / std::max(h, w);
  const int64_t nh = std::max<int64_t>(1, std::lround(h * scale)), nw = std::max<int64_t>(1, std::lround(w * scale));
  const at::Tensor x = image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  return at::_upsample_bilinear2d_aa(x, {nh, nw}, false).round().clamp(0, 255).to(at::kByte)[0].permute({1, 2, 0})
      .contiguous();
}

}  // namespace

absl::StatusOr<EncodedImage> EncodeRgb(const at::Tensor& rgb, const engine::ImageEncodeOptions& options) {
  const at::Tensor c = rgb.contiguous();
  engine::PixelImage pixels;
  pixels.height = static_cast<int>(c.size(0));
  pixels.width = static_cast<int>(c.size(1));
  pixels.channels = 3;
  pixels.pixels.assign(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
  auto data = engine::EncodeImage(pixels, options);
  if (!data.ok()) return data.status();
  EncodedImage image;
  image.data = *std::move(data);
  image.mime_type = engine::ImageMimeType(options.format);
  image.width = pixels.width;
  image.height = pixels.height;
  return image;
}

LivePreview::LivePreview(const PreviewSettings& settings, const engine::Sd1Pipeline& pipeline,
                         const engine::Taesd* taesd)
    : settings_(settings),
      previewer_(&pipeline.vae(), pipeline.weights().config.scale_factor, taesd,
                 absl::FailedPreconditionError("no TAESD decoder")) {
  encoding_.format = settings.format;
  encoding_.quality = 80;
}

bool LivePreview::Due(int step, int total) const {
  if (settings_.method == engine::PreviewMethod::kNone) return false;
  const int every = settings_.every_n_steps;  // <= 0: only a batch's last step
  return every <= 0 ? step == total : (step % every == 0 || step == total);
}

absl::StatusOr<EncodedImage> LivePreview::Render(const at::Tensor& x0) const {
  auto rendered = previewer_.Render(settings_.method, x0);
  if (!rendered.ok()) return rendered.status();
  try {
    return EncodeRgb(Bounded(Grid(*rendered), settings_.max_size), encoding_);
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

}  // namespace atelier::jobs
