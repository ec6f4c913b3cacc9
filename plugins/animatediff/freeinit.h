// sd-webui-animatediff's FreeInit (scripts/animatediff_freeinit.py): the pass is sampled `iterations` times; before
// each later iteration the previous result is diffused back to t = 999 on the job's schedule and its low
// frequencies (3-D FFT over frames, height, width) are kept while the high ones come from the first noise again.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::animatediff {

// The low-pass filter [frames, h, w] (float32) of `method` ("butterworth" (order 4), "gaussian", "ideal", "box"),
// element for element as the extension's filters compute it, quirks included (the ideal filter compares the
// squared distance with 2 * d_s; d_s or d_t of 0 gives all zeros). INVALID_ARGUMENT naming the valid methods.
absl::StatusOr<at::Tensor> FreeInitFilter(const std::string& method, int frames, int height, int width, double d_s,
                                          double d_t);

// DDIM's add_noise at t = 999: sqrt(a) * latent + sqrt(1 - a) * noise, a = alphas_cumprod[999].
at::Tensor DiffuseToEnd(const at::Tensor& latent, const at::Tensor& noise, const at::Tensor& alphas_cumprod);

// freq_mix_3d over [frames, 4, h, w] latents: the low frequencies (filter [frames, h, w]) of `x` with the high ones
// of `noise`, per channel, in float32; the result has `x`'s dtype and device.
at::Tensor FreqMix3d(const at::Tensor& x, const at::Tensor& noise, const at::Tensor& low_pass);

}  // namespace atelier::animatediff
