#!/usr/bin/env python3
"""Trains the embedded model's text encoder and UNet together on latents of the trained VAE (frozen), resumable:
RUN/ldm.pt every few minutes, continued when restarted, until --steps optimizer steps in total. eps objective on the
SD1.x scaled-linear schedule, uniform timesteps, min-SNR-5 loss weighting (the noisy timesteps, where layout and
colour are decided, count fully), 10% empty captions for CFG, AdamW with warm-up and cosine decay, an EMA of the
weights (the EMA is what export.py ships). Every --eval-minutes the EMA is sampled on held-out captions (DDIM,
CFG 7) and scored.

    python3 training/train_ldm.py --run training/runs/main --steps 6500 --lr 8e-4"""

import argparse
import copy
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
import tokens  # noqa: E402
import world  # noqa: E402


class Latents:
    """A pool of training scenes encoded once by the frozen VAE (posterior mean and std; a fresh sample is drawn
    per use), with their captions' token ids drawn anew each time (wording varies)."""

    def __init__(self, vae, n, seed, scale, threads_note=""):
        rng = random.Random(seed)
        self.scenes, means, stds = [], [], []
        with torch.no_grad():
            for start in range(0, n, 256):
                scenes = [world.training_scene(rng) for _ in range(min(256, n - start))]
                images = np.stack([world.render(s, rng) for s in scenes])
                x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                mean, logvar = vae.encode(x)
                means.append(mean)
                stds.append(torch.exp(0.5 * logvar))
                self.scenes.extend(scenes)
        self.mean, self.std, self.scale = torch.cat(means), torch.cat(stds), scale

    def batch(self, rng, n, drop=0.1, contested=0.0):
        """Latents, token ids and emphasis multipliers. A `contested` share of single-shape captions names two
        colours for the shape with WebUI emphasis weights, the drawn one weighted up (1.1-1.6) and the other down
        (0.4-0.9): "a large (red:1.3) (blue:0.7) circle ..." with a red circle, so that emphasis means what it
        means to a user (the heavier word wins) instead of being ignored by a model that never saw it."""
        index = [rng.randrange(len(self.scenes)) for _ in range(n)]
        z = (self.mean[index] + self.std[index] * torch.randn_like(self.mean[index])) * self.scale
        ids, weights = [], []
        for i in index:
            scene = self.scenes[i]
            if rng.random() < drop:
                row = tokens.encode_weighted([("", 1.0)])
            elif len(scene["shapes"]) == 1 and rng.random() < contested:
                row = tokens.encode_weighted(contested_caption(scene, rng))
            else:
                row = tokens.encode_weighted([(world.caption(scene, rng), 1.0)])
            ids.append(row[0])
            weights.append(row[1])
        return z, torch.tensor(ids), torch.tensor(weights)


def contested_caption(scene, rng):
    caption = world.caption(scene, rng)
    colour = scene["shapes"][0]["colour"]
    at = caption.index(f" {colour} ") + 1
    other = rng.choice([c for c in world.COLOURS if c not in (colour, scene["background"])])
    drawn, distractor = (colour, rng.uniform(1.1, 1.6)), (other, rng.uniform(0.4, 0.9))
    pair = [drawn, distractor] if rng.random() < 0.5 else [distractor, drawn]
    return [(caption[:at], 1.0), pair[0], pair[1], (caption[at + len(colour):], 1.0)]


def emphasis(z, multipliers):
    """WebUI's "Original" emphasis (sd_hijack_clip): scale each token's vector, then restore the mean of z."""
    if bool((multipliers == 1.0).all()):
        return z
    original = z.mean(dim=(1, 2), keepdim=True)
    scaled = z * multipliers[:, :, None]
    return scaled * (original / scaled.mean(dim=(1, 2), keepdim=True))


def measure_scale(vae, seed=3, n=2048):
    """1 / std of the VAE's latents: the checkpoint's scale_factor (SD's 0.18215 plays this role)."""
    rng = random.Random(seed)
    with torch.no_grad():
        images = np.stack([world.render(world.training_scene(rng), rng) for _ in range(n)])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        mean, _ = vae.encode(x)
    return float(1.0 / mean.std())


@torch.no_grad()
def sample(unet, text, vae, scale, captions, steps=20, cfg=7.0, seed=0):
    """DDIM (eta 0) over `steps` evenly spaced timesteps with CFG; uint8 images [n, 64, 64, 3]."""
    ac = ldm_models.sd_schedule(**config.SCHEDULE)["alphas_cumprod"]
    g = torch.Generator().manual_seed(seed)
    n = len(captions)
    x = torch.randn(n, 4, config.NATIVE // 8, config.NATIVE // 8, generator=g)
    cond = text(torch.tensor([tokens.encode(c) for c in captions]))
    uncond = text(torch.tensor([tokens.encode("")] * n))
    ts = np.linspace(999, 0, steps).round().astype(int)
    for i, t in enumerate(ts):
        eps_u, eps_c = unet(torch.cat([x, x]), torch.full((2 * n,), float(t)), torch.cat([uncond, cond])).chunk(2)
        eps = eps_u + cfg * (eps_c - eps_u)
        a = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    images = vae.decode(x / scale)
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def evaluate(unet, text, vae, scale, n_single=32, n_double=16, **kw):
    scenes = world.evaluation_scenes(n_single, n_double)
    images = sample(unet, text, vae, scale, [world.caption(s) for s in scenes], **kw)
    totals = {}
    for scene, image in zip(scenes, images):
        for k, v in world.score(scene, image).items():
            totals.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in totals.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--steps", type=int, required=True, help="the budget: optimizer steps in total")
    parser.add_argument("--minutes", type=float, default=1e9, help="also stop after this much training time")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--pool", type=int, default=24000)
    parser.add_argument("--eval-minutes", type=float, default=10)
    parser.add_argument("--contested", type=float, default=0.15,
                        help="share of single-shape captions naming two colours with emphasis weights")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    saved_vae = torch.load(os.path.join(args.run, "vae.pt"))
    vae = ldm_models.AutoencoderKL(config.VAE["ddconfig"], config.VAE["embed_dim"])
    vae.load_state_dict(saved_vae["model"])
    vae.eval().requires_grad_(False)
    path = os.path.join(args.run, "ldm.pt")
    unet = ldm_models.UNetModel(**config.UNET)
    text = ldm_models.ClipTextModel(**config.TEXT)
    nn_params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(nn_params, lr=args.lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)
    state = {"step": 0, "seconds": 0.0, "scale": None, "next_eval": args.eval_minutes * 60}
    if os.path.exists(path):
        saved = torch.load(path)
        unet.load_state_dict(saved["unet"])
        text.load_state_dict(saved["text"])
        ema_unet.load_state_dict(saved["ema_unet"])
        ema_text.load_state_dict(saved["ema_text"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        print(f"resumed at step {state['step']} ({state['seconds'] / 60:.1f} min)", flush=True)
    if state["scale"] is None:
        state["scale"] = measure_scale(vae)
    print(f"scale_factor {state['scale']:.5f}; unet {sum(p.numel() for p in unet.parameters())} params, "
          f"text {sum(p.numel() for p in text.parameters())}", flush=True)
    t0 = time.time()
    pool = Latents(vae, args.pool, seed=11, scale=state["scale"])
    print(f"pool of {len(pool.scenes)} latents in {time.time() - t0:.0f} s", flush=True)
    ac = ldm_models.sd_schedule(**config.SCHEDULE)["alphas_cumprod"]
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 for the eps objective
    rng = random.Random(500 + state["step"])
    last_save, total = time.time(), args.minutes * 60

    def save():
        torch.save({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_unet.state_dict(),
                    "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "state": state}, path + ".tmp")
        os.replace(path + ".tmp", path)

    # The schedule follows steps, not time: another process on the CPU slows training but does not cut it short.
    while state["step"] < args.steps and state["seconds"] < total:
        t_start = time.time()
        frac = state["step"] / args.steps
        lr = args.lr * min(1.0, (state["step"] + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        z, ids, multipliers = pool.batch(rng, args.batch, contested=args.contested)
        t = torch.randint(0, 1000, (args.batch,))
        noise = torch.randn_like(z)
        a = ac[t][:, None, None, None]
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        eps = unet(noisy, t.float(), emphasis(text(ids), multipliers))
        loss = (weight[t] * ((eps - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(nn_params, 1.0)
        opt.step()
        state["step"] += 1
        decay = min(0.999, (1 + state["step"]) / (10 + state["step"]))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.mul_(decay).add_(pl.detach(), alpha=1 - decay)
        state["seconds"] += time.time() - t_start
        if state["step"] % 50 == 0:
            print(f"step {state['step']} {state['seconds'] / 60:.1f} min loss {loss.item():.4f} lr {lr:.2e}",
                  flush=True)
        if state["seconds"] >= state["next_eval"] or state["step"] >= args.steps:
            state["next_eval"] += args.eval_minutes * 60
            t_eval = time.time()
            scores = evaluate(ema_unet, ema_text, vae, state["scale"])
            print(f"eval at {state['seconds'] / 60:.1f} min (step {state['step']}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()) + f" [{time.time() - t_eval:.0f} s]",
                  flush=True)
        if time.time() - last_save > 120 or state["step"] >= args.steps:
            save()
            last_save = time.time()
    print("done", flush=True)


if __name__ == "__main__":
    main()
