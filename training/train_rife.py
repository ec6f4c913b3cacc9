#!/usr/bin/env python3
"""Trains a tiny RIFE v4.6 IFNet (Practical-RIFE's released flownet.pkl names: block0..block3, conv0.0.0 / conv0.1.0,
convblock.0..7.{conv,beta}, lastconv.0; flow + accumulated mask) on frame triplets of moving shapes
(motion_world.triplet), resumable: RUN/rife.pt every two minutes, continued when restarted, until --steps optimizer
steps. The frames are zero-padded from 64x64 to 128x128 as the plugin pads them (Practical-RIFE pads to 128); the
loss is L1 (plus a 2x-downsampled L1) of the predicted frame inside the picture, plus 0.01 x L1 of the flow against
the true motion (known from the scene). --export writes the safetensors
file the daemon ships; --eval measures the held-out checks (PSNR against the linear blend, centroid error).

    python3 training/train_rife.py --run training/runs/rife --steps 2500
    python3 training/train_rife.py --run training/runs/rife --export assets/models/RIFE/atelier-rife46-shapes.safetensors
    python3 training/train_rife.py --eval assets/models/RIFE/atelier-rife46-shapes.safetensors"""

import argparse
import json
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import motion_world  # noqa: E402
from loop import Loop  # noqa: E402
import st_io  # noqa: E402

WIDTHS = (128, 96, 64, 32)  # the released 4.6 has 192, 128, 96, 64
PAD = 128


# Tap (ky) of ConvTranspose2d(k 4, stride 2, padding 1) that output row 2m + a reads from input row m + di.
_TAPS = {(0, 0): 1, (0, -1): 3, (1, 0): 2, (1, 1): 0}


def up_conv(x, weight, bias):
    """ConvTranspose2d(k 4, stride 2, padding 1) as a 3x3 convolution to 4x the channels and a pixel shuffle: the same
    numbers, but through oneDNN (libtorch 1.13's CPU transposed convolution and its backward are ~10x slower)."""
    c, o = weight.shape[0], weight.shape[1]
    k = weight.new_zeros(o, 2, 2, c, 3, 3)
    for (a, di), ky in _TAPS.items():
        for (b, dj), kx in _TAPS.items():
            k[:, a, b, :, di + 1, dj + 1] = weight[:, :, ky, kx].t()
    return F.pixel_shuffle(F.conv2d(x, k.reshape(o * 4, c, 3, 3), bias.repeat_interleave(4), padding=1), 2)


def resize(x, factor):
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def warp(image, flow):
    """Practical-RIFE's warplayer: bilinear, border padding, align_corners=True."""
    n, _, h, w = flow.shape
    hor = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(n, -1, h, -1)
    ver = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(n, -1, -1, w)
    grid = torch.cat([hor, ver], 1)
    f = torch.cat([flow[:, 0:1] / ((image.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((image.shape[2] - 1.0) / 2.0)], 1)
    return F.grid_sample(image, (grid + f).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=True)


class ResConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class IFBlock(nn.Module):
    def __init__(self, in_planes, c):
        super().__init__()
        self.conv0 = nn.Sequential(nn.Sequential(nn.Conv2d(in_planes, c // 2, 3, 2, 1), nn.LeakyReLU(0.2)),
                                   nn.Sequential(nn.Conv2d(c // 2, c, 3, 2, 1), nn.LeakyReLU(0.2)))
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x, flow, scale):
        x = resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat([x, resize(flow, 1.0 / scale) * (1.0 / scale)], 1)
        up = self.lastconv[0]
        tmp = F.pixel_shuffle(up_conv(self.convblock(self.conv0(x)), up.weight, up.bias), 2)
        tmp = resize(tmp, scale)
        return tmp[:, :4] * scale, tmp[:, 4:5]


class IFNet(nn.Module):
    def __init__(self, widths=WIDTHS):
        super().__init__()
        self.block0 = IFBlock(7, widths[0])
        self.block1 = IFBlock(8 + 4, widths[1])
        self.block2 = IFBlock(8 + 4, widths[2])
        self.block3 = IFBlock(8 + 4, widths[3])

    def forward(self, img0, img1, t):
        tmap = t.view(-1, 1, 1, 1).expand(-1, 1, img0.shape[2], img0.shape[3])
        flow = mask = None
        warped0, warped1 = img0, img1
        for block, s in zip((self.block0, self.block1, self.block2, self.block3), (8, 4, 2, 1)):
            if flow is None:
                flow, mask = block(torch.cat([img0, img1, tmap], 1), None, s)
            else:
                df, dm = block(torch.cat([warped0, warped1, tmap, mask], 1), flow, s)
                flow, mask = flow + df, mask + dm
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        self.last_flow = flow
        return warped0 * m + warped1 * (1 - m)


def to_tensor(frames):
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def pad(x):
    return F.pad(x, (0, PAD - x.shape[3], 0, PAD - x.shape[2]))


def interpolate(net, f0, f1, t):
    """Frames [n, 3, 64, 64] in [0, 1] -> the frame at t, as the plugin runs it (padded to 128, cropped back)."""
    h, w = f0.shape[2], f0.shape[3]
    return net(pad(f0), pad(f1), t)[:, :, :h, :w]


def batch(rng, n):
    """Frames, the times, and the true flows [n, 4, 64, 64] (frame t -> frame 0, frame t -> frame 1)."""
    f0, ft, f1, ts, flows = [], [], [], [], []
    for _ in range(n):
        t = 0.5 if rng.random() < 0.6 else rng.choice((0.25, 0.75))
        a, b, c, scene = motion_world.triplet(rng, t)
        to0, to1 = motion_world.true_flow(scene, t, 0.0), motion_world.true_flow(scene, t, 1.0)
        if rng.random() < 0.5:  # time reversed
            a, c, t, to0, to1 = c, a, 1.0 - t, to1, to0
        f0.append(a), ft.append(b), f1.append(c), ts.append(t)
        flows.append(np.concatenate([to0, to1], axis=2))
    flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
    return to_tensor(f0), to_tensor(ft), to_tensor(f1), torch.tensor(ts, dtype=torch.float32), flow


def train(args):
    os.makedirs(args.run, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = IFNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    loop = Loop(os.path.join(args.run, "rife.pt"), net, opt, args.steps)
    rng = random.Random(1000 + loop.step)
    while loop.running():
        lr = loop.set_lr(args.lr, warmup=100, floor=0.1)
        f0, ft, f1, t, flow = batch(rng, args.batch)
        out = interpolate(net, f0, f1, t)
        loss = (out - ft).abs().mean() + (F.avg_pool2d(out, 2) - F.avg_pool2d(ft, 2)).abs().mean()
        # The true motion is known here (privileged, as Practical-RIFE's teacher block sees the middle frame):
        # a small L1 on the final flow inside the picture guides the blocks to it early.
        loss = loss + args.flow_weight * (net.last_flow[:, :, :64, :64] - flow).abs().mean()
        loop.update(loss, lr)
    print(f"done: {loop.step} steps", flush=True)


def export(args):
    state = torch.load(os.path.join(args.run, "rife.pt"))
    tensors = {k: v.half() for k, v in state["net"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.export)), exist_ok=True)
    st_io.save(args.export, tensors, {"architecture": "RIFE IFNet 4.6", "widths": ",".join(map(str, WIDTHS)),
                                      "trained_steps": state["step"], "training": "training/train_rife.py"})
    print(f"wrote {args.export} ({os.path.getsize(args.export)} bytes)")


def load_exported(path):
    tensors, _ = st_io.load(path)
    widths = tuple(tensors[f"block{i}.conv0.1.0.weight"].shape[0] for i in range(4))
    net = IFNet(widths)
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.eval()


def psnr(a, b):
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def evaluate(net, n, seed=12345):
    """Held-out motion (a seed the training never draws from): mean PSNR of the interpolated middle frame and of the
    linear blend against the true middle frame, and the share of shapes whose centroid lands within 1 px of the
    true one (single-shape triplets)."""
    rng = random.Random(seed)
    f0, ft, f1, scenes = [], [], [], []
    while len(scenes) < n:
        a, b, c, scene = motion_world.triplet(rng, 0.5)
        f0.append(a), ft.append(b), f1.append(c), scenes.append(scene)
    f0, ft, f1 = to_tensor(f0), to_tensor(ft), to_tensor(f1)
    with torch.no_grad():
        out = interpolate(net, f0, f1, torch.full((n,), 0.5))
    blend = (f0 + f1) / 2
    out8 = (out.clamp(0, 1) * 255).round() / 255
    hits, singles = 0, 0
    for i, scene in enumerate(scenes):
        if len(scene["shapes"]) != 1:
            continue
        singles += 1
        want = motion_world.centroid((ft[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        got = motion_world.centroid((out8[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        if got is not None and want is not None and math.hypot(got[0] - want[0], got[1] - want[1]) <= 1.0:
            hits += 1
    return {"cases": n, "psnr_rife": float(psnr(out8, ft).mean()), "psnr_blend": float(psnr(blend, ft).mean()),
            "centroid_within_1px": hits / max(1, singles), "single_shape_cases": singles}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs", "rife"))
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flow-weight", type=float, default=0.01)
    p.add_argument("--export")
    p.add_argument("--eval")
    p.add_argument("--cases", type=int, default=400)
    args = p.parse_args()
    if args.eval:
        torch.set_num_threads(args.threads)
        print(json.dumps(evaluate(load_exported(args.eval), args.cases), indent=1))
    elif args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
