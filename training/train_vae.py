#!/usr/bin/env python3
"""Trains the embedded model's AutoencoderKL on freshly drawn scenes (no dataset: every batch is new), resumable:
checkpoints to RUN/vae.pt every few minutes and continues from there when restarted. Loss: MSE + 0.1·L1 + 1e-6·KL
with the posterior's log-variance starting at -8 (what tiny-universe.md found necessary), plus an L1 on image
gradients that keeps shape edges sharp. Stops after --steps optimizer steps in total (across restarts).

    python3 training/train_vae.py --run training/runs/main --steps 4500"""

import argparse
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config  # noqa: E402
import ldm_models  # noqa: E402
import world  # noqa: E402


def batch(rng, n):
    images = np.stack([world.render(world.training_scene(rng), rng) for _ in range(n)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def gradients(x):
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def psnr(a, b):
    mse = F.mse_loss(a.clamp(-1, 1), b).item()
    return 10 * np.log10(4.0 / max(mse, 1e-10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--steps", type=int, required=True, help="the budget: optimizer steps in total")
    parser.add_argument("--minutes", type=float, default=1e9, help="also stop after this much training time")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.run, exist_ok=True)
    path = os.path.join(args.run, "vae.pt")
    torch.manual_seed(0)
    vae = ldm_models.AutoencoderKL(config.VAE["ddconfig"], config.VAE["embed_dim"])
    with torch.no_grad():
        vae.quant_conv.bias[config.VAE["embed_dim"]:] = -8.0  # the log-variance half: a small initial posterior
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    state = {"step": 0, "seconds": 0.0}
    if os.path.exists(path):
        saved = torch.load(path)
        vae.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        print(f"resumed at step {state['step']} ({state['seconds'] / 60:.1f} min)", flush=True)
    rng = random.Random(1000 + state["step"])
    eval_rng = random.Random(7)
    eval_images = batch(eval_rng, 64)
    last_save = time.time()
    total = args.minutes * 60
    # The schedule follows steps, not time: another process on the CPU slows training but does not cut it short.
    while state["step"] < args.steps and state["seconds"] < total:
        t0 = time.time()
        # Cosine decay over the budget after a short warm-up.
        frac = state["step"] / args.steps
        lr = args.lr * min(1.0, (state["step"] + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        x = batch(rng, args.batch)
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        y = vae.decode(z)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        gy, gx = gradients(y)
        ty, tx = gradients(x)
        loss = F.mse_loss(y, x) + 0.1 * F.l1_loss(y, x) + 0.1 * (F.l1_loss(gy, ty) + F.l1_loss(gx, tx)) + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["seconds"] += time.time() - t0
        if state["step"] % 100 == 0:
            with torch.no_grad():
                m, _ = vae.encode(eval_images)
                rec = vae.decode(m)
            print(f"step {state['step']} {state['seconds'] / 60:.1f} min loss {loss.item():.4f} "
                  f"psnr {psnr(rec, eval_images):.2f} dB lr {lr:.2e}", flush=True)
        if time.time() - last_save > 120 or state["step"] >= args.steps:
            torch.save({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, path + ".tmp")
            os.replace(path + ".tmp", path)
            last_save = time.time()
    print("done", flush=True)


if __name__ == "__main__":
    main()
