// Live previews of a sampler's current prediction x0 (a UNet-space latent [B, 4, h, w]) as 8-bit RGB images, by
// the methods of WebUI and ComfyUI:
//   - "Approx cheap" (WebUI sd_vae_approx.cheap_approximation): a fixed 4x3 matrix, one pixel per latent pixel;
//   - ComfyUI's latent2rgb with the SD1.5 factors: another 4x3 matrix, quantised by rounding;
//   - TAESD (models/VAE-approx/taesd_decoder), 8x the latent size;
//   - the full VAE decoder (slowest, exact), 8x the latent size.
// Each method quantises as its reference does, so a preview equals the reference's byte for byte.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atelier::engine {

class Vae;
class Taesd;

enum class PreviewMethod {
  kNone,
  kApproxCheap,   // WebUI "Approx cheap"
  kApproxComfy,   // ComfyUI "latent2rgb" (SD1.5 factors)
  kTaesd,         // WebUI/ComfyUI "TAESD"
  kFull,          // WebUI "Full"
};

// Accepts Atelier's names ("none", "approx-cheap", "approx-comfyui", "taesd", "full"), WebUI's
// show_progress_type values ("Approx cheap", "TAESD", "Full") and ComfyUI's --preview-method values ("none",
// "auto" (= latent2rgb), "latent2rgb", "taesd"), case-insensitively. Anything else is INVALID_ARGUMENT listing the
// choices; WebUI's "Approx NN" (a network this daemon does not ship) is UNIMPLEMENTED naming the alternatives.
absl::StatusOr<PreviewMethod> ParsePreviewMethod(absl::string_view name);
// Atelier's name of a method ("approx-cheap", ...).
const char* PreviewMethodName(PreviewMethod method);

// WebUI's cheap approximation: rgb[b, r] = sum_l latent[b, l] * coeffs[l][r]; [B, 4, h, w] -> [B, 3, h, w] float32,
// about [-1, 1].
at::Tensor CheapApproximation(const at::Tensor& latent);
// ComfyUI's Latent2RGB for SD1.5: [B, 4, h, w] -> [B, h, w, 3] float32, about [-1, 1].
at::Tensor ComfyLatentToRgb(const at::Tensor& latent);

// uint8 images [B, H, W, 3] from RGB, the way each reference quantises:
// WebUI single_sample_to_image: x [B, 3, H, W] about [-1, 1]: uint8(255 * clamp(x * 0.5 + 0.5, 0, 1)), truncating.
at::Tensor WebUiToUint8(const at::Tensor& x);
// ComfyUI preview_to_image (current): x [B, H, W, 3]: round((clamp(x, -1, 1) + 1) * 127.5), half to even.
at::Tensor ComfyToUint8Round(const at::Tensor& x);
// ComfyUI before the rounding change: uint8(clamp((x + 1) / 2, 0, 1) * 255), truncating.
at::Tensor ComfyToUint8Truncate(const at::Tensor& x);

class LatentPreviewer {
 public:
  // `vae` (for kFull) and `taesd` (for kTaesd) may be null; `taesd_unavailable` is the error reported when
  // kTaesd is asked for without a TAESD decoder (it should name the folder the files are looked for in).
  LatentPreviewer(const Vae* vae, double scale_factor, const Taesd* taesd, absl::Status taesd_unavailable);

  // Whether `method` can run here; FAILED_PRECONDITION saying what is missing otherwise.
  absl::Status Available(PreviewMethod method) const;

  // The preview of x0 [B, 4, h, w] (UNet space): uint8 [B, H, W, 3] on the CPU, H x W = h x w for the matrix
  // methods and 8h x 8w for TAESD and the full VAE. kNone is INVALID_ARGUMENT.
  absl::StatusOr<at::Tensor> Render(PreviewMethod method, const at::Tensor& x0) const;

 private:
  const Vae* vae_;
  double scale_factor_;
  const Taesd* taesd_;
  absl::Status taesd_unavailable_;
};

}  // namespace atelier::engine
