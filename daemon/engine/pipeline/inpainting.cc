#include "engine/pipeline/inpainting.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/models/nn_util.h"

namespace atelier::engine {
namespace {

// One direction of cv2.GaussianBlur on float [H, W]: kernel size k, sigma s, BORDER_REFLECT_101.
at::Tensor Blur1d(const at::Tensor& x, double sigma, int dim) {
  const int k = 2 * static_cast<int>(2.5 * sigma + 0.5) + 1;
  const int r = k / 2;
  std::vector<float> taps(static_cast<size_t>(k));
  double sum = 0;
  for (int i = 0; i < k; ++i) sum += taps[static_cast<size_t>(i)] = static_cast<float>(std::exp(-(i - r) * (i - r) / (2 * sigma * sigma)));
  for (float& t : taps) t = static_cast<float>(t / sum);
  const at::Tensor kernel = at::tensor(taps).view({1, 1, k});
  // Rows (or columns) as a batch of 1-D signals.
  at::Tensor lines = dim == 1 ? x : x.t();
  const int64_t n = lines.size(1);
  at::Tensor padded;
  if (r < n) {
    padded = at::reflection_pad1d(lines.unsqueeze(1), {r, r});
  } else {  // a kernel wider than the image: reflect-101 wraps; replicate is the bounded stand-in
    padded = at::replication_pad1d(lines.unsqueeze(1), {r, r});
  }
  at::Tensor out = at::conv1d(padded, kernel).squeeze(1);
  return dim == 1 ? out : out.t();
}

// PIL's GaussianBlur(radius) on float [C, H, W]: three box blurs of the radius that matches the Gaussian's
// variance, edges extended.
at::Tensor BoxGaussian(const at::Tensor& x, double sigma) {
  if (sigma <= 0) return x;
  const int radius = std::max(1, static_cast<int>(std::lround((std::sqrt(12.0 * sigma * sigma / 3.0 + 1.0) - 1.0) / 2.0)));
  at::Tensor y = x;
  for (int pass = 0; pass < 3; ++pass) {
    for (int dim : {2, 1}) {
      at::Tensor lines = dim == 2 ? y : y.transpose(1, 2);  // [C, A, B]: blur along B
      const int64_t len = lines.size(2);
      const int r = static_cast<int>(std::min<int64_t>(radius, 4 * len));
      at::Tensor padded = at::replication_pad1d(lines.reshape({-1, 1, len}), {r + 1, r}).squeeze(1);
      at::Tensor cum = padded.cumsum(1);
      at::Tensor box = (cum.slice(1, 2 * r + 1) - cum.slice(1, 0, len)) / (2 * r + 1);
      box = box.reshape(lines.sizes());
      y = dim == 2 ? box : box.transpose(1, 2).contiguous();
    }
  }
  return y;
}

// masking.fill: the masked part replaced by blurred colours of the rest, from coarse (radius 256) to fine.
at::Tensor FillMasked(const at::Tensor& image, const at::Tensor& mask) {
  const at::Tensor keep = (255 - mask.to(at::kFloat)).div(255.0).unsqueeze(0);        // [1, H, W] alpha
  const at::Tensor premul = image.permute({2, 0, 1}).to(at::kFloat).div(255.0) * keep;  // [3, H, W]
  const at::Tensor masked = at::cat({premul, keep}, 0);                                 // premultiplied RGBa
  at::Tensor out = at::zeros_like(masked);
  const std::pair<double, int> passes[] = {{256, 1}, {64, 1}, {16, 2}, {4, 4}, {2, 2}, {0, 1}};
  for (const auto& [radius, repeats] : passes) {
    const at::Tensor blurred = BoxGaussian(masked, radius);
    const at::Tensor a = blurred.slice(0, 3, 4);
    for (int i = 0; i < repeats; ++i) out = blurred + out * (1 - a);  // alpha_composite, premultiplied
  }
  const at::Tensor alpha = out.slice(0, 3, 4);
  const at::Tensor rgb = at::where(alpha > 0, out.slice(0, 0, 3) / alpha.clamp_min(1e-12), at::zeros_like(alpha));
  return rgb.mul(255).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
}

at::Tensor Resize1(const at::Tensor& mask, ResizeMode mode, int width, int height) {
  auto resized = ResizeInitImage(mask.unsqueeze(2).expand({-1, -1, 3}).contiguous(), mode, width, height);
  return resized.ok() ? resized->select(2, 0).contiguous() : at::Tensor();
}

// masking.get_crop_region_v2 + expand_crop_region: the mask's bounding box, padded, widened to width:height.
std::optional<std::array<int64_t, 4>> CropRegion(const at::Tensor& mask, int padding, int width, int height) {
  const at::Tensor nz = mask.nonzero();
  if (nz.size(0) == 0) return std::nullopt;
  const int64_t ih = mask.size(0), iw = mask.size(1);
  int64_t y1 = nz.select(1, 0).min().item<int64_t>(), y2 = nz.select(1, 0).max().item<int64_t>() + 1;
  int64_t x1 = nz.select(1, 1).min().item<int64_t>(), x2 = nz.select(1, 1).max().item<int64_t>() + 1;
  if (padding > 0) {
    x1 = std::max<int64_t>(x1 - padding, 0);
    y1 = std::max<int64_t>(y1 - padding, 0);
    x2 = std::min<int64_t>(x2 + padding, iw);
    y2 = std::min<int64_t>(y2 + padding, ih);
  }
  const double r_crop = static_cast<double>(x2 - x1) / (y2 - y1), r_proc = static_cast<double>(width) / height;
  if (r_crop > r_proc) {
    const int64_t d = static_cast<int64_t>((x2 - x1) / r_proc - (y2 - y1));
    y1 -= d / 2;
    y2 += d - d / 2;
    if (y2 >= ih) { const int64_t diff = y2 - ih; y2 -= diff; y1 -= diff; }
    if (y1 < 0) { y2 -= y1; y1 = 0; }
    if (y2 >= ih) y2 = ih;
  } else {
    const int64_t d = static_cast<int64_t>((y2 - y1) * r_proc - (x2 - x1));
    x1 -= d / 2;
    x2 += d - d / 2;
    if (x2 >= iw) { const int64_t diff = x2 - iw; x2 -= diff; x1 -= diff; }
    if (x1 < 0) { x2 -= x1; x1 = 0; }
    if (x2 >= iw) x2 = iw;
  }
  return std::array<int64_t, 4>{x1, y1, x2 - x1, y2 - y1};
}

}  // namespace

const char* InpaintFillName(InpaintFill fill) {
  switch (fill) {
    case InpaintFill::kFill: return "fill";
    case InpaintFill::kOriginal: return "original";
    case InpaintFill::kLatentNoise: return "latent noise";
    case InpaintFill::kLatentNothing: return "latent nothing";
  }
  return "original";
}

at::Tensor MaskFromImage(const at::Tensor& rgba, bool round) {
  if (rgba.size(2) == 4 && rgba.select(2, 3).lt(255).any().item<bool>()) {
    const at::Tensor alpha = rgba.select(2, 3).contiguous();
    return round ? at::where(alpha > 128, at::full_like(alpha, 255), at::zeros_like(alpha)) : alpha;
  }
  // PIL: L = (R * 299 + G * 587 + B * 114 + 500) / 1000 in integers.
  const at::Tensor c = rgba.slice(2, 0, 3).to(at::kInt);
  const at::Tensor l = (c.select(2, 0) * 299 + c.select(2, 1) * 587 + c.select(2, 2) * 114 + 500).div(1000, "floor");
  return l.clamp(0, 255).to(at::kByte).contiguous();
}

at::Tensor BlurMask(const at::Tensor& mask, int blur_x, int blur_y) {
  if (blur_x <= 0 && blur_y <= 0) return mask;
  at::Tensor m = mask.to(at::kFloat);
  if (blur_x > 0) m = Blur1d(m, blur_x, 1).round().clamp(0, 255);
  if (blur_y > 0) m = Blur1d(m, blur_y, 0).round().clamp(0, 255);
  return m.to(at::kByte).contiguous();
}

absl::StatusOr<InpaintPlan> PrepareInpainting(const at::Tensor& image, const at::Tensor& mask_in,
                                              const InpaintSettings& s, ResizeMode resize_mode, int width,
                                              int height) {
  if (!image.defined() || image.dim() != 3 || image.size(2) != 3 || !mask_in.defined() || mask_in.dim() != 2 ||
      image.scalar_type() != at::kByte || mask_in.scalar_type() != at::kByte) {
    return absl::InvalidArgumentError("inpainting needs an 8-bit RGB image and an 8-bit mask");
  }
  if (s.blur_x < 0 || s.blur_y < 0 || s.blur_x > 256 || s.blur_y > 256 || s.padding < 0 || s.padding > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("mask_blur ", s.blur_x, "x", s.blur_y, " must be 0 to 256 and ",
                                                   "inpaint_full_res_padding ", s.padding, " 0 to 4096"));
  }
  try {
    InpaintPlan plan;
    // The mask at the image's own size (WebUI pastes the image with the mask as given: they share a size).
    at::Tensor mask = mask_in;
    if (mask.size(0) != image.size(0) || mask.size(1) != image.size(1)) {
      mask = Resize1(mask, ResizeMode::kJustResize, static_cast<int>(image.size(1)), static_cast<int>(image.size(0)));
    }
    if (s.invert) mask = 255 - mask;
    mask = BlurMask(mask, s.blur_x, s.blur_y);

    at::Tensor overlay_mask;
    std::optional<std::array<int64_t, 4>> crop;
    if (s.full_res) {
      crop = CropRegion(mask, s.padding, width, height);
      plan.blank_mask = !crop.has_value();
    }
    if (crop) {
      const auto [x, y, w, h] = *crop;
      plan.paste_to = crop;
      overlay_mask = mask;
      plan.image_mask = Resize1(mask.slice(0, y, y + h).slice(1, x, x + w).contiguous(), ResizeMode::kResizeAndFill,
                                width, height);
      plan.overlay = image;
      auto cropped = ResizeInitImage(image.slice(0, y, y + h).slice(1, x, x + w).contiguous(),
                                     ResizeMode::kResizeAndFill, width, height);
      if (!cropped.ok()) return cropped.status();
      plan.image = *cropped;
    } else {
      const ResizeMode mode = resize_mode == ResizeMode::kLatentUpscale ? ResizeMode::kJustResize : resize_mode;
      plan.image_mask = Resize1(mask, mode, width, height);
      overlay_mask = (plan.image_mask.to(at::kInt) * 2).clamp(0, 255).to(at::kByte);
      auto resized = ResizeInitImage(image, mode, width, height);
      if (!resized.ok()) return resized.status();
      plan.image = *resized;
      plan.overlay = plan.image;
    }
    if (plan.blank_mask) {  // nothing to inpaint: plain img2img, no composite
      plan.overlay = at::Tensor();
      return plan;
    }
    plan.overlay_alpha = (255 - overlay_mask).contiguous();
    if (s.fill != InpaintFill::kOriginal) plan.image = FillMasked(plan.image, plan.image_mask);

    // The latent keep-mask: the job-size mask resized to the latent (antialiased bicubic), rounded.
    at::Tensor lat = at::_upsample_bicubic2d_aa(plan.image_mask.to(at::kFloat).view({1, 1, height, width}),
                                                {height / 8, width / 8}, false)
                         .round()
                         .clamp(0, 255)
                         .div(255.0);
    if (s.round) lat = lat.round();
    plan.latent_keep = 1.0 - lat;
    return plan;
  } catch (const std::exception& e) {
    return StatusFromException(e, "preparing the inpainting mask");
  }
}

absl::StatusOr<at::Tensor> InpaintingConditioning(const ImageEncoder& encode, const at::Tensor& image_uint8,
                                                  const at::Tensor& image_mask, bool round, double weight, int width,
                                                  int height, const at::Tensor& eps) {
  try {
    at::Tensor src, m;
    if (image_mask.defined()) {
      src = image_uint8;
      m = image_mask.to(at::kFloat).div(255.0).view({1, 1, height, width});
      if (round) m = m.round();
    } else if (image_uint8.defined()) {  // img2img without a mask: the whole image, weighed (an all-ones mask)
      src = image_uint8;
      m = at::ones({1, 1, image_uint8.size(0), image_uint8.size(1)});
    } else {
      src = at::full({height, width, 3}, 127.5, at::kFloat);  // WebUI: 0.5 grey -> 0 in [-1, 1]
      m = at::ones({1, 1, height, width});
    }
    // image * (1 - weight * mask) in [-1, 1], back to the encoder's 0..255 input.
    const at::Tensor x = src.to(at::kFloat).div(127.5).sub(1.0).permute({2, 0, 1}).unsqueeze(0);
    const at::Tensor blanked = x * (1.0 - weight * m);
    const at::Tensor as_pixels = blanked.add(1.0).mul(127.5).squeeze(0).permute({1, 2, 0});
    auto latent = encode(as_pixels, eps);
    if (!latent.ok()) return latent.status();
    at::Tensor m_lat = at::upsample_nearest2d(m, {latent->size(2), latent->size(3)}).to(latent->device());
    at::Tensor out = at::cat({m_lat, *latent}, 1);
    // The job's latent size (latent upscale encodes the image at its own size).
    if (out.size(2) != height / 8 || out.size(3) != width / 8) {
      out = at::upsample_nearest2d(out, {height / 8, width / 8});
    }
    return out;
  } catch (const std::exception& e) {
    return StatusFromException(e, "building the inpainting conditioning");
  }
}

at::Tensor ApplyOverlay(const at::Tensor& generated, const InpaintPlan& plan) {
  if (!plan.overlay.defined()) return generated;
  at::Tensor base = generated;
  if (plan.paste_to) {
    const auto [x, y, w, h] = *plan.paste_to;
    base = at::zeros_like(plan.overlay);
    auto fitted = ResizeInitImage(generated, ResizeMode::kCropAndResize, static_cast<int>(w), static_cast<int>(h));
    if (fitted.ok()) base.slice(0, y, y + h).slice(1, x, x + w).copy_(*fitted);
  }
  const at::Tensor a = plan.overlay_alpha.to(at::kFloat).div(255.0).unsqueeze(2);
  const at::Tensor out = plan.overlay.to(at::kFloat) * a + base.to(at::kFloat) * (1 - a);
  return out.round().clamp(0, 255).to(at::kByte).contiguous();
}

}  // namespace atelier::engine
