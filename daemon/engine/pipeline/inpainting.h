// WebUI's img2img inpainting (processing.py StableDiffusionProcessingImg2Img.init with a mask, masking.py): the
// mask (luma, or alpha when transparent; inverted; Gaussian-blurred in x and y as cv2 does), "Only masked" (the
// padded crop around the mask, widened to the job's aspect, inpainted at the job's size and pasted back), the
// masked-content fill, the latent keep-mask blended every step, the 9-channel models' conditioning, and the final
// composite of the original outside the mask.
#pragma once

#include <array>
#include <functional>
#include <optional>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/pipeline/img2img_resize.h"

namespace atelier::engine {

// The VAE encode of an image (float or uint8 HWC in [0, 255]) with posterior noise `eps` (EncodeInitImage).
using ImageEncoder = std::function<absl::StatusOr<at::Tensor>(const at::Tensor& image, const at::Tensor& eps)>;

enum class InpaintFill : int { kFill = 0, kOriginal = 1, kLatentNoise = 2, kLatentNothing = 3 };

struct InpaintSettings {
  int blur_x = 4, blur_y = 4;
  bool round = true;             // mask_round
  InpaintFill fill = InpaintFill::kFill;
  bool full_res = true;          // inpaint_full_res ("Only masked")
  int padding = 0;               // inpaint_full_res_padding
  bool invert = false;           // inpainting_mask_invert
  double mask_weight = 1.0;      // inpainting_mask_weight (9-channel conditioning)
};

// WebUI's masked-content names ("fill", "original", "latent noise", "latent nothing").
const char* InpaintFillName(InpaintFill fill);

struct InpaintPlan {
  at::Tensor image;        // uint8 [H, W, 3]: what the VAE encodes (resized or cropped, filled)
  at::Tensor image_mask;   // uint8 [H, W]: the processed mask at the job's size
  at::Tensor latent_keep;  // float [1, 1, H/8, W/8]: 1 where the original latent is kept (WebUI's p.mask)
  at::Tensor overlay;      // uint8 [h, w, 3]: the original for the composite (job size, or its own for full res)
  at::Tensor overlay_alpha;  // uint8 [h, w]: 255 - the overlay mask (255 = keep the original)
  std::optional<std::array<int64_t, 4>> paste_to;  // x, y, w, h of the inpainted crop in the original (full res)
  bool blank_mask = false;  // "Only masked" with an empty mask: plain img2img
};

// The Gaussian blur of a uint8 mask [H, W] as cv2.GaussianBlur with kernel (2 * int(2.5 * s + 0.5) + 1) in x, then
// y, reflect-101 borders, rounded back to uint8. 0 skips a direction.
at::Tensor BlurMask(const at::Tensor& mask, int blur_x, int blur_y);

// Everything init() derives from the image and the mask. `image` uint8 [h0, w0, 3] at its own size; `mask` uint8
// [hm, wm] (any size: resized like the image). INVALID_ARGUMENT for bad shapes or settings.
absl::StatusOr<InpaintPlan> PrepareInpainting(const at::Tensor& image, const at::Tensor& mask,
                                              const InpaintSettings& settings, ResizeMode resize_mode, int width,
                                              int height);

// The 9-channel models' conditioning [1, 5, H/8, W/8]: the rounded mask (nearest-resized) then the VAE latent of
// the image with the masked part blanked (image * (1 - weight * mask)). `mask` undefined: txt2img's all-ones mask
// over a zero image; an image without a mask (plain img2img): an all-ones mask, the image weighed by `weight`. `eps`
// is the posterior noise of that encode.
absl::StatusOr<at::Tensor> InpaintingConditioning(const ImageEncoder& encode, const at::Tensor& image_uint8,
                                                  const at::Tensor& image_mask, bool round, double weight,
                                                  int width, int height, const at::Tensor& eps);

// The final composite: the generated image (uint8 [H, W, 3]) pasted into the original's frame for full res, then
// the original laid over it where the overlay mask keeps it.
at::Tensor ApplyOverlay(const at::Tensor& generated, const InpaintPlan& plan);

// The 8-bit luma of an RGB(A) image as PIL's convert("L") (alpha, when the image has transparency, as WebUI's
// create_binary_mask takes it; rounded to 0/255 at 128 when `round`). `rgba` uint8 [H, W, 3 or 4].
at::Tensor MaskFromImage(const at::Tensor& rgba, bool round);

}  // namespace atelier::engine
