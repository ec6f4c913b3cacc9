#!/usr/bin/env python3
"""Trains a tiny AnimateDiff motion module (v2 layout: down_blocks.*.motion_modules.*, mid_block.motion_modules.0,
up_blocks.*.motion_modules.*, temporal transformers with 32-position encodings) for the embedded model (frozen), on
captioned clips of the world (motion_world: a shape moving to the left / right / top / bottom, or growing), as
AnimateDiff trains: one timestep per clip, independent noise per frame, eps objective, 10% empty captions.
Resumable (RUN/motion.pt every two minutes) until --steps optimizer steps. --export writes the shipped file
(sd-webui-animatediff's names); --eval measures the held-out checks.

    python3 training/train_motion.py --run training/runs/motion --steps 1500
    python3 training/train_motion.py --run training/runs/motion --export assets/models/AnimateDiff/atelier-shapes-motion-v2.safetensors
    python3 training/train_motion.py --eval assets/models/AnimateDiff/atelier-shapes-motion-v2.safetensors"""

import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config  # noqa: E402
import ldm_models  # noqa: E402
import motion_world  # noqa: E402
import plugin_models  # noqa: E402
from loop import Loop  # noqa: E402
import st_io  # noqa: E402
import tokens  # noqa: E402

FRAMES = (8, 8, 8, 16)  # clip lengths drawn in training (16 a quarter of the time)


def animatediff_alphas_cumprod():
    """The schedule sd-webui-animatediff switches an SD1.x model to while a motion module is in (_set_ddim_alpha):
    linear betas 0.00085..0.012, as AnimateDiff trains; the plugin does the same, so the module trains under it."""
    return torch.cumprod(1.0 - torch.linspace(0.00085, 0.012, 1000, dtype=torch.float32), 0)


def encoded_clips(vae, n, frames, rng, growing_share=None):
    """n clips of `frames` frames drawn from rng (motion_world.training_clip) and encoded by the frozen VAE in batches
    of 32: (clips, posterior means [n, frames, 4, h, w], stds)."""
    entries, means, stds = [], [], []
    with torch.no_grad():
        for start in range(0, n, 32):
            batch = [motion_world.training_clip(rng, growing_share) for _ in range(min(32, n - start))]
            video = np.concatenate([motion_world.render_clip(c, frames, rng) for c in batch])
            x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1
            mean, logvar = vae.encode(x)
            means.append(mean.view(len(batch), frames, *mean.shape[1:]))
            stds.append(torch.exp(0.5 * logvar).view(len(batch), frames, *mean.shape[1:]))
            entries += batch
    return entries, torch.cat(means), torch.cat(stds)


class Pool:
    """Clips of each length encoded once by the frozen VAE (posterior mean and std)."""

    def __init__(self, vae, scale, clips, seed):
        rng = random.Random(seed)
        self.items = {frames: encoded_clips(vae, clips * FRAMES.count(frames) // len(FRAMES), frames, rng)
                      for frames in sorted(set(FRAMES))}
        self.scale = scale

    def extend(self, vae, frames, n, seed, growing_share):
        """n more clips of one length (growing ones drawn with growing_share), appended to that length's items."""
        entries, means, stds = self.items[frames]
        more, more_means, more_stds = encoded_clips(vae, n, frames, random.Random(seed), growing_share)
        self.items[frames] = (list(entries) + more, torch.cat([means, more_means]), torch.cat([stds, more_stds]))

    def batch(self, rng, latents, lengths=FRAMES):
        frames = rng.choice(lengths)
        clips, mean, std = self.items[frames]
        n = max(1, latents // frames)
        index = [rng.randrange(len(clips)) for _ in range(n)]
        z = (mean[index] + std[index] * torch.randn_like(mean[index])) * self.scale  # [n, F, 4, h, w]
        ids = [tokens.encode("" if rng.random() < 0.1 else motion_world.clip_caption(clips[i])) for i in index]
        return z, torch.tensor(ids), frames


def train(args):
    os.makedirs(args.run, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    unet, text, vae, scale = plugin_models.load_embedded()
    mm = plugin_models.MotionModules()
    opt = torch.optim.AdamW(mm.parameters(), lr=args.lr, weight_decay=0.0)
    loop = Loop(os.path.join(args.run, "motion.pt"), mm, opt, args.steps)
    t0 = time.time()
    pool_path = os.path.join(args.run, f"pool-{args.clips}.pt")  # deterministic (seed 31): kept across restarts
    if os.path.exists(pool_path):
        pool = torch.load(pool_path)
    else:
        pool = Pool(vae, scale, args.clips, seed=31)
        torch.save(pool, pool_path)
    lengths = tuple(int(f) for f in args.frames.split(","))
    if args.extra_clips:
        # More clips of each requested length, growing ones more often: the motion 16-frame clips learn last.
        extra_path = os.path.join(args.run, f"pool-{args.clips}-extra-{args.extra_clips}-g{args.growing_share}.pt")
        if os.path.exists(extra_path):
            pool = torch.load(extra_path)
        else:
            for frames in sorted(set(lengths)):
                pool.extend(vae, frames, args.extra_clips, seed=32 + frames, growing_share=args.growing_share)
            torch.save(pool, extra_path)
    print(f"pool in {time.time() - t0:.0f} s; motion modules {sum(p.numel() for p in mm.parameters())} params",
          flush=True)
    ac = animatediff_alphas_cumprod()
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=5.0) / snr
    rng = random.Random(900 + loop.step)
    while loop.running():
        lr = loop.set_lr(args.lr, warmup=50, floor=0.2)
        z, ids, frames = pool.batch(rng, args.latents, lengths)
        n = z.shape[0]
        with torch.no_grad():
            ctx = text(ids).repeat_interleave(frames, 0)
        t = torch.randint(0, 1000, (n,)).repeat_interleave(frames)
        z = z.reshape(n * frames, *z.shape[2:])
        noise = torch.randn_like(z)
        a = ac[t][:, None, None, None]
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        eps = plugin_models.unet_forward(unet, noisy, t.float(), ctx, hook=mm.hook(frames))
        loop.update((weight[t] * ((eps - noise) ** 2).mean(dim=(1, 2, 3))).mean(), lr)
    print(f"done: {loop.step} steps", flush=True)


def export(args):
    saved = torch.load(os.path.join(args.run, "motion.pt"))
    mm = plugin_models.MotionModules()
    mm.load_state_dict(saved["net"])
    tensors = {k: v.half() for k, v in mm.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.export)), exist_ok=True)
    st_io.save(args.export, tensors, {"atelier.base": "atelier-shapes", "trained_steps": saved["step"],
                                      "training": "training/train_motion.py"})
    print(f"wrote {args.export} ({os.path.getsize(args.export)} bytes, {len(tensors)} tensors)")


def load_exported(path):
    tensors, _ = st_io.load(path)
    mm = plugin_models.MotionModules()
    mm.load_state_dict({k: v.float() for k, v in tensors.items()})
    return mm.eval().requires_grad_(False)


@torch.no_grad()
def sample_clip(unet, text, vae, scale, caption, frames, mm=None, steps=20, cfg=7.0, seed=0):
    """One clip: DDIM (eta 0) with CFG, independent initial noise per frame; uint8 [frames, 64, 64, 3]. With the
    module, the schedule is AnimateDiff's (as in the plugin)."""
    ac = animatediff_alphas_cumprod() if mm is not None else ldm_models.sd_schedule(**config.SCHEDULE)["alphas_cumprod"]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 4, config.NATIVE // 8, config.NATIVE // 8, generator=g)
    ctx = torch.cat([text(torch.tensor([tokens.encode("")])).repeat(frames, 1, 1),
                     text(torch.tensor([tokens.encode(caption)])).repeat(frames, 1, 1)])
    # Rows [uncond video, cond video]: whole videos of `frames` rows each, as the plugin sees them.
    hook = mm.hook(frames) if mm is not None else None

    def eps_cfg(x, t):
        eps_u, eps_c = plugin_models.unet_forward(unet, torch.cat([x, x]), torch.full((2 * frames,), float(t)), ctx,
                                                  hook=hook).chunk(2)
        return eps_u + cfg * (eps_c - eps_u)
    return plugin_models.ddim_decode(eps_cfg, x, ac, vae, scale, steps)


def evaluate(path, n, frames_list=(8, 16)):
    unet, text, vae, scale = plugin_models.load_embedded()
    mm = load_exported(path)
    out = {"cases": n, "chance": {"direction": "about 0.1 (a random walk rarely moves 8 px one way monotonically)"}}
    for frames in frames_list:
        rows = {"with_module": [], "without_module": []}
        for i, clip in enumerate(motion_world.evaluation_clips(n)):
            for label, module in (("with_module", mm), ("without_module", None)):
                video = sample_clip(unet, text, vae, scale, motion_world.clip_caption(clip), frames, module, seed=i)
                rows[label].append(motion_world.clip_checks(clip, video))
        out[f"frames_{frames}"] = {label: {k: float(np.mean([r[k] for r in v])) for k in v[0]}
                                   for label, v in rows.items()}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--latents", type=int, default=32, help="frames per batch (clips x frames)")
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--frames", default=",".join(map(str, FRAMES)), help="clip lengths drawn per batch (8 and/or 16)")
    p.add_argument("--extra-clips", type=int, default=0,
                   help="clips added to the pool for each length in --frames, drawn with --growing-share")
    p.add_argument("--growing-share", type=float, default=0.4, help="share of growing clips among the extra clips")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--export")
    p.add_argument("--eval")
    p.add_argument("--cases", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval:
        print(json.dumps(evaluate(args.eval, args.cases), indent=1))
    elif args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
