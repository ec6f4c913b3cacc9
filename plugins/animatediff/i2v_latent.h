// sd-webui-animatediff's img2img latents (scripts/animatediff_latent.py AnimateDiffI2VLatent.randomize): frame i
// keeps init_alpha[i] = max(0, 1 - i^latent_power / latent_scale) of the init image's latent and takes the rest from
// the first noise draw; with a last frame, its latent is blended in from the end with the mirrored weights
// (normalised where both sum above 1; the first frame is all init, the last all last frame).
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace atelier::animatediff {

struct I2vAlphas {
  at::Tensor init;  // float32 [frames, 1, 1, 1]
  at::Tensor last;  // undefined without a last frame
};

// The per-frame weights for `frames` frames; the last frame's when `with_last`.
I2vAlphas I2vLatentAlphas(int frames, double power, double scale, bool with_last, double power_last,
                          double scale_last);

// init * a + [last * b +] noise * (1 - a [- b]) with the weights above (all [frames, 4, h, w] but `last`, which may
// be [1, 4, h, w]).
at::Tensor MixI2vLatent(const I2vAlphas& alphas, const at::Tensor& init, const at::Tensor& last,
                        const at::Tensor& noise);

}  // namespace atelier::animatediff
