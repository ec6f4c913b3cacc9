#!/usr/bin/env python3
"""Trains a tiny ControlNet (cldm / sd-webui-controlnet v1.1 layout: control_model.*, input_hint_block, zero_convs,
middle_block_out) on the embedded model (assets/models/Stable-diffusion/atelier-shapes, frozen), for one kind of
hint of the world's scenes:
  canny  cv2.Canny(render, 100, 200), what the plugin's "canny" preprocessor makes at processor_res 64
  seg    a flat segmentation-style map: the background grey, each shape filled with its kind's colour (world.SEG_COLOURS)
The encoder starts as a copy of the UNet's; captions are the full caption (25%), the caption without the places
(50%: the hint alone says where) or empty (25%); half the timesteps are drawn from the noisier half, where the
layout is decided. Resumable (RUN/controlnet.pt every two minutes) until --steps
optimizer steps. --export writes the shipped file; --eval measures the held-out checks.

    python3 training/train_controlnet.py --hint canny --run training/runs/cn-canny --steps 900
    python3 training/train_controlnet.py --hint canny --run training/runs/cn-canny \\
        --export assets/models/ControlNet/atelier-shapes-canny.safetensors
    python3 training/train_controlnet.py --hint canny --eval assets/models/ControlNet/atelier-shapes-canny.safetensors"""

import argparse
import json
import os
import random
import sys
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config  # noqa: E402
import ldm_models  # noqa: E402
import plugin_models  # noqa: E402
from loop import Loop  # noqa: E402
import st_io  # noqa: E402
import tokens  # noqa: E402
import world  # noqa: E402

def canny_hint(image):
    edges = cv2.Canny(np.ascontiguousarray(image), 100, 200)
    return np.repeat(edges[:, :, None], 3, axis=2)


def make_hint(kind, scene, seed):
    """(render, hint) uint8 [64, 64, 3] of a scene, the same jitter for both."""
    image = world.render(scene, random.Random(seed))
    hint = canny_hint(image) if kind == "canny" else world.render_segmentation(scene, random.Random(seed))
    return image, hint


def training_scene(rng):
    return world.training_scene(rng)


class Pool:
    def __init__(self, kind, vae, scale, n, seed):
        rng = random.Random(seed)
        self.scenes, hints, means, stds = [], [], [], []
        with torch.no_grad():
            for start in range(0, n, 256):
                batch = [training_scene(rng) for _ in range(min(256, n - start))]
                pairs = [make_hint(kind, s, rng.randrange(1 << 30)) for s in batch]
                x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 127.5 - 1
                mean, logvar = vae.encode(x)
                means.append(mean)
                stds.append(torch.exp(0.5 * logvar))
                hints.append(torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2).contiguous())
                self.scenes += batch
        self.mean, self.std, self.hints, self.scale = torch.cat(means), torch.cat(stds), torch.cat(hints), scale

    def batch(self, rng, n):
        index = [rng.randrange(len(self.scenes)) for _ in range(n)]
        z = (self.mean[index] + self.std[index] * torch.randn_like(self.mean[index])) * self.scale
        ids = []
        for i in index:
            r = rng.random()
            text = world.caption(self.scenes[i], rng) if r < 0.25 else world.caption_without_places(
                self.scenes[i]) if r < 0.75 else ""
            ids.append(tokens.encode(text))
        return z, self.hints[index].float() / 255.0, torch.tensor(ids)


def train(args):
    os.makedirs(args.run, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    unet, text, vae, scale = plugin_models.load_embedded()
    net = plugin_models.ControlNet()
    net.init_from(unet)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    loop = Loop(os.path.join(args.run, "controlnet.pt"), net, opt, args.steps)
    t0 = time.time()
    pool_path = os.path.join(args.run, f"pool-{args.pool}.pt")  # deterministic (seed 21): kept across restarts
    if os.path.exists(pool_path):
        pool = torch.load(pool_path)
    else:
        pool = Pool(args.hint, vae, scale, args.pool, seed=21)
        torch.save(pool, pool_path)
    print(f"pool of {len(pool.scenes)} in {time.time() - t0:.0f} s; controlnet "
          f"{sum(p.numel() for p in net.parameters())} params", flush=True)
    ac = ldm_models.sd_schedule(**config.SCHEDULE)["alphas_cumprod"]
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=5.0) / snr
    rng = random.Random(700 + loop.step)
    while loop.running():
        lr = loop.set_lr(args.lr, warmup=50, floor=0.2)
        z, hint, ids = pool.batch(rng, args.batch)
        with torch.no_grad():
            ctx = text(ids)
        # Half the timesteps from the noisier half, where the layout (what a hint says) is decided.
        t = torch.where(torch.rand(args.batch) < 0.5, torch.randint(0, 1000, (args.batch,)),
                        torch.randint(500, 1000, (args.batch,)))
        noise = torch.randn_like(z)
        a = ac[t][:, None, None, None]
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        residuals = net(noisy, hint, t.float(), ctx)
        eps = plugin_models.unet_forward(unet, noisy, t.float(), ctx, residuals=residuals)
        loop.update((weight[t] * ((eps - noise) ** 2).mean(dim=(1, 2, 3))).mean(), lr)
    print(f"done: {loop.step} steps", flush=True)


def export(args):
    saved = torch.load(os.path.join(args.run, "controlnet.pt"))
    tensors = {"control_model." + k: v.half() for k, v in saved["net"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.export)), exist_ok=True)
    st_io.save(args.export, tensors, {"atelier.hint": args.hint, "atelier.base": "atelier-shapes",
                                      "trained_steps": saved["step"], "training": "training/train_controlnet.py"})
    print(f"wrote {args.export} ({os.path.getsize(args.export)} bytes)")


def load_exported(path):
    tensors, _ = st_io.load(path)
    net = plugin_models.ControlNet()
    net.load_state_dict({k[len("control_model."):]: v.float() for k, v in tensors.items()})
    return net.eval().requires_grad_(False)


@torch.no_grad()
def sample(unet, text, vae, scale, captions, hints, net=None, weight=1.0, steps=20, cfg=7.0, seed=0):
    """DDIM (eta 0) with CFG; the ControlNet on both halves (WebUI's Balanced mode) when given."""
    ac = ldm_models.sd_schedule(**config.SCHEDULE)["alphas_cumprod"]
    g = torch.Generator().manual_seed(seed)
    n = len(captions)
    x = torch.randn(n, 4, config.NATIVE // 8, config.NATIVE // 8, generator=g)
    ctx = torch.cat([text(torch.tensor([tokens.encode("")] * n)), text(torch.tensor([tokens.encode(c) for c in captions]))])
    h2 = torch.cat([hints, hints]) if hints is not None else None

    def eps_cfg(x, t):
        xx, tt = torch.cat([x, x]), torch.full((2 * n,), float(t))
        res = [r * weight for r in net(xx, h2, tt, ctx)] if net is not None else None
        eps_u, eps_c = plugin_models.unet_forward(unet, xx, tt, ctx, residuals=res).chunk(2)
        return eps_u + cfg * (eps_c - eps_u)
    return plugin_models.ddim_decode(eps_cfg, x, ac, vae, scale, steps)


def placement_cases(n, seed=5):
    """Held-out single-shape scenes, the prompt without the place; the hint puts the shape at its place."""
    scenes = [s for s in world.all_scenes(False) if world.held_out(world.scene_key(s))]
    return random.Random(seed).sample(scenes, n)


def evaluate(kind, path, n):
    unet, text, vae, scale = plugin_models.load_embedded()
    net = load_exported(path)
    scenes = placement_cases(n)
    hints = torch.from_numpy(np.stack([make_hint(kind, s, 0)[1] for s in scenes])).permute(0, 3, 1, 2).float() / 255
    captions = [world.caption_without_places(s) for s in scenes]
    out = {"cases": n}
    for label, unit in (("with_unit", net), ("without_unit", None)):
        images = sample(unet, text, vae, scale, captions, hints if unit is not None else None, unit)
        reads = [world.read_scene(im) for im in images]
        out[label] = {
            "position": float(np.mean([bool(r["shapes"]) and r["shapes"][0]["position"] == s["shapes"][0]["position"]
                                       for r, s in zip(reads, scenes)])),
            "kind": float(np.mean([bool(r["shapes"]) and r["shapes"][0]["kind"] == s["shapes"][0]["kind"]
                                   for r, s in zip(reads, scenes)])),
            "colour": float(np.mean([bool(r["shapes"]) and r["shapes"][0]["colour"] == s["shapes"][0]["colour"]
                                     for r, s in zip(reads, scenes)])),
        }
    out["chance"] = {"position": world.CHANCE["position"], "kind": world.CHANCE["kind"]}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hint", choices=("canny", "seg"), required=True)
    p.add_argument("--run")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--pool", type=int, default=12000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--export")
    p.add_argument("--eval")
    p.add_argument("--cases", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval:
        print(json.dumps(evaluate(args.hint, args.eval, args.cases), indent=1))
    elif args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
