"""Goldens for the FreeInit and img2img-latent tests (tests/unit/plugins/animatediff/freeinit_test.cc), written to
tests/data/animatediff/freeinit.safetensors with PyTorch, following sd-webui-animatediff's
scripts/animatediff_freeinit.py and scripts/animatediff_latent.py (v2.0.2-f) as published, not Atelier's code:
 - the four low-pass filters (butterworth n=4, gaussian, ideal, box) of shape [1, 4, T, H, W] by their per-element
   loops, for two (d_s, d_t) pairs, stored as [T, H, W] (the channels are equal);
 - ddim_add_noise at t = 999 on the linear-beta AnimateDiff schedule, then freq_mix_3d of that with the first noise
   (latents [T, 4, H, W] permuted to [1, 4, T, H, W], fftn / fftshift over the last three dims);
 - AnimateDiffI2VLatent.randomize's init_alpha / last_alpha (with their normalisation) and the mixed latent.
Run once with python3-torch; the output is committed (the tests need no Python)."""

import math
import os

import torch
import torch.fft as fft
from safetensors_io import write

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "animatediff")
torch.manual_seed(11)
T, H, W = 6, 5, 8


def mask_loop(shape, d_s, d_t, value):
    mask = torch.zeros(shape)
    if d_s == 0 or d_t == 0:
        return mask
    Tn, Hn, Wn = shape[-3], shape[-2], shape[-1]
    for t in range(Tn):
        for h in range(Hn):
            for w in range(Wn):
                d_square = (((d_s / d_t) * (2 * t / Tn - 1)) ** 2 + (2 * h / Hn - 1) ** 2 + (2 * w / Wn - 1) ** 2)
                mask[..., t, h, w] = value(d_square, d_s)
    return mask


def box(shape, d_s, d_t):
    Tn, Hn, Wn = shape[-3], shape[-2], shape[-1]
    mask = torch.zeros(shape)
    if d_s == 0 or d_t == 0:
        return mask
    threshold_s = round(int(Hn // 2) * d_s)
    threshold_t = round(Tn // 2 * d_t)
    cframe, crow, ccol = Tn // 2, Hn // 2, Wn // 2
    mask[..., cframe - threshold_t:cframe + threshold_t, crow - threshold_s:crow + threshold_s,
         ccol - threshold_s:ccol + threshold_s] = 1.0
    return mask


filters = {
    "butterworth": lambda s, ds, dt: mask_loop(s, ds, dt, lambda d2, d_s: 1 / (1 + (d2 / d_s ** 2) ** 4)),
    "gaussian": lambda s, ds, dt: mask_loop(s, ds, dt, lambda d2, d_s: math.exp(-1 / (2 * d_s ** 2) * d2)),
    "ideal": lambda s, ds, dt: mask_loop(s, ds, dt, lambda d2, d_s: 1 if d2 <= d_s * 2 else 0),
    "box": box,
}

out = {}
shape = [1, 4, T, H, W]
for (ds, dt, tag) in ((0.25, 0.25, "a"), (0.6, 0.35, "b")):
    for name, f in filters.items():
        out[f"filter_{name}_{tag}"] = f(shape, ds, dt)[0, 0].contiguous()

alphas = torch.cumprod(1 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float32), 0)
x0 = torch.randn(T, 4, H, W)
initial = torch.randn(T, 4, H, W)
a = alphas[999]
z_T = a ** 0.5 * x0 + (1 - a) ** 0.5 * initial
z_T5 = z_T.permute(1, 0, 2, 3)[None]
noise5 = initial.permute(1, 0, 2, 3)[None]
LPF = filters["butterworth"](shape, 0.25, 0.25)
xf = fft.fftshift(fft.fftn(z_T5.float(), dim=(-3, -2, -1)), dim=(-3, -2, -1))
nf = fft.fftshift(fft.fftn(noise5, dim=(-3, -2, -1)), dim=(-3, -2, -1))
mixed = fft.ifftn(fft.ifftshift(xf * LPF + nf * (1 - LPF), dim=(-3, -2, -1)), dim=(-3, -2, -1)).real
out.update(alphas_cumprod=alphas, x0=x0, initial=initial, diffused=z_T, mixed=mixed[0].permute(1, 0, 2, 3).contiguous())

# randomize(): 7 frames, power 1.5 / scale 6, last frame power 1 / scale 3.
L = 7
init_alpha = torch.tensor([1 - pow(i, 1.5) / 6 for i in range(L)], dtype=torch.float32)[:, None, None, None]
init_alpha[init_alpha < 0] = 0
last_alpha = [1 - pow(i, 1) / 3 for i in range(L)]
last_alpha.reverse()
last_alpha = torch.tensor(last_alpha, dtype=torch.float32)[:, None, None, None]
last_alpha[last_alpha < 0] = 0
out["init_alpha_alone"] = init_alpha.clone()
sum_alpha = init_alpha + last_alpha
mask_alpha = sum_alpha > 1
scaling_factor = 1 / sum_alpha[mask_alpha]
init_alpha[mask_alpha] *= scaling_factor
last_alpha[mask_alpha] *= scaling_factor
init_alpha[0] = 1
init_alpha[-1] = 0
last_alpha[0] = 0
last_alpha[-1] = 1
init_latent = torch.randn(L, 4, H, W)
last_latent = torch.randn(1, 4, H, W)
noise = torch.randn(L, 4, H, W)
out.update(init_alpha=init_alpha, last_alpha=last_alpha, init_latent=init_latent, last_latent=last_latent,
           i2v_noise=noise, i2v_mixed=init_latent * init_alpha + last_latent * last_alpha + noise * (1 - init_alpha - last_alpha))

os.makedirs(OUT, exist_ok=True)
write(os.path.join(OUT, "freeinit.safetensors"), out)
print("wrote", len(out), "tensors")
