#include "engine/pipeline/hires_fix.h"

#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/nn_util.h"
#include "util/limits.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace {

const std::vector<HiresUpscaler>& Upscalers() {
  static const std::vector<HiresUpscaler> upscalers = {
      {"Latent", HiresUpscaleKind::kLatent, "bilinear", false},
      {"Latent (antialiased)", HiresUpscaleKind::kLatent, "bilinear", true},
      {"Latent (bicubic)", HiresUpscaleKind::kLatent, "bicubic", false},
      {"Latent (bicubic antialiased)", HiresUpscaleKind::kLatent, "bicubic", true},
      {"Latent (nearest)", HiresUpscaleKind::kLatent, "nearest", false},
      {"Latent (nearest-exact)", HiresUpscaleKind::kLatent, "nearest-exact", false},
      {"None", HiresUpscaleKind::kImage, "lanczos", false},
      {"Lanczos", HiresUpscaleKind::kImage, "lanczos", false},
      {"Nearest", HiresUpscaleKind::kImage, "nearest", false},
  };
  return upscalers;
}

}  // namespace

std::vector<std::string> HiresUpscalerNames() {
  std::vector<std::string> names;
  for (const auto& u : Upscalers()) names.push_back(u.name);
  return names;
}

absl::StatusOr<HiresUpscaler> FindHiresUpscaler(absl::string_view name) {
  if (name.empty()) return Upscalers().front();
  for (const auto& u : Upscalers()) {
    if (u.name == name) return u;
  }
  return absl::NotFoundError(absl::StrCat("hr_upscaler ", Quoted(name), " not found; available: ",
                                          absl::StrJoin(HiresUpscalerNames(), ", ")));
}

absl::StatusOr<HiresTarget> HiresTargetSize(int width, int height, const HiresFix& hr, int max_side) {
  if (hr.resize_x < 0 || hr.resize_y < 0 || hr.resize_x > max_side || hr.resize_y > max_side) {
    return absl::InvalidArgumentError(
        absl::StrCat("hr_resize_x/hr_resize_y ", hr.resize_x, "x", hr.resize_y, " must be 0 (unused) to ", max_side));
  }
  HiresTarget t;
  if (hr.resize_x == 0 && hr.resize_y == 0) {
    if (!std::isfinite(hr.scale) || hr.scale <= 0 || hr.scale > 16) {
      return absl::InvalidArgumentError(absl::StrCat("hr_scale ", hr.scale, " is outside (0, 16]"));
    }
    t.width = static_cast<int>(width * hr.scale);
    t.height = static_cast<int>(height * hr.scale);
  } else if (hr.resize_y == 0) {
    t.width = hr.resize_x;
    t.height = hr.resize_x * height / width;
  } else if (hr.resize_x == 0) {
    t.width = hr.resize_y * width / height;
    t.height = hr.resize_y;
  } else {
    // Cover the requested box keeping the first pass's aspect, then crop the overflow in the latent.
    const double src = static_cast<double>(width) / height, dst = static_cast<double>(hr.resize_x) / hr.resize_y;
    if (src < dst) {
      t.width = hr.resize_x;
      t.height = hr.resize_x * height / width;
    } else {
      t.width = hr.resize_y * width / height;
      t.height = hr.resize_y;
    }
    // Python's floor division of non-negative numbers.
    t.truncate_x = (t.width - hr.resize_x) / 8;
    t.truncate_y = (t.height - hr.resize_y) / 8;
  }
  // The images it makes: the latent (target / 8) less the cropped overflow, times 8.
  const int out_w = (t.width / 8 - t.truncate_x) * 8, out_h = (t.height / 8 - t.truncate_y) * 8;
  if (out_w < 64 || out_h < 64 || t.width > max_side || t.height > max_side) {
    return absl::InvalidArgumentError(absl::StrCat("hires fix would make ", out_w, "x", out_h,
                                                   " images; each side must be 64 to ", max_side));
  }
  return t;
}

absl::StatusOr<at::Tensor> UpscaleLatent(const at::Tensor& latent, const HiresUpscaler& u, int64_t height,
                                         int64_t width) {
  try {
    const std::vector<int64_t> size = {height, width};
    if (u.mode == "bilinear") {
      return u.antialias ? at::_upsample_bilinear2d_aa(latent, size, false) : at::upsample_bilinear2d(latent, size, false);
    }
    if (u.mode == "bicubic") {
      return u.antialias ? at::_upsample_bicubic2d_aa(latent, size, false) : at::upsample_bicubic2d(latent, size, false);
    }
    if (u.mode == "nearest") return at::upsample_nearest2d(latent, size);
    if (u.mode == "nearest-exact") return at::_upsample_nearest_exact2d(latent, size);
  } catch (const std::exception& e) {
    return StatusFromException(e, "upscaling the latent");
  }
  return absl::InvalidArgumentError(absl::StrCat("'", u.name, "' is not a latent upscaler"));
}

absl::StatusOr<at::Tensor> UpscaleImages(const at::Tensor& images, const HiresUpscaler& u, int64_t height,
                                         int64_t width, const UpscaleStop& stop) {
  std::unique_ptr<ImageUpscaler> builtin;
  const ImageUpscaler* upscaler = u.model.get();
  if (upscaler == nullptr) {
    auto found = BuiltinUpscaler(u.name.empty() ? "None" : u.name);
    if (!found.ok()) return absl::InvalidArgumentError(absl::StrCat("'", u.name, "' is not an image upscaler"));
    builtin = *std::move(found);
    upscaler = builtin.get();
  }
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); ++i) {
    auto resized = ResizeWithUpscaler(upscaler, images[i], width, height, kMaxImageSide, stop);
    if (!resized.ok()) return resized.status();
    out.push_back(*std::move(resized));
  }
  try {
    return at::stack(out).contiguous();
  } catch (const std::exception& e) {
    return StatusFromException(e, "upscaling the first pass's images");
  }
}

}  // namespace atelier::engine
