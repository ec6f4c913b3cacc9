#!/usr/bin/env python3
"""RIFE speed peer: HolyWu/vs-rife's port of Practical-RIFE's IFNet 4.6 (their own PyTorch code, read from a checkout
given on the command line, never copied into this tree) on Debian's python3-torch, timing one interpolated frame.

    python3 bench/rife_peer.py --vsrife /path/to/vs-rife --weights ../shared/fixtures/rife-v4/weights.safetensors

Prints {"ms_per_frame": ..., "threads": ...} as JSON. bench/rife_bench.cc runs it beside the C++ model when
ATELIER_RIFE_PEER names such a checkout."""

import argparse
import json
import os
import struct
import sys
import tempfile
import time

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    kinds = {"F16": np.float16, "F32": np.float32}
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(body[a:b], dtype=kinds[v["dtype"]]).reshape(v["shape"]).astype(np.float32))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vsrife", required=True, help="a checkout of HolyWu/vs-rife")
    p.add_argument("--weights", required=True)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--runs", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    # Their two files as a package of their own (the real vsrife/__init__ needs VapourSynth).
    pkg = tempfile.mkdtemp()
    os.makedirs(os.path.join(pkg, "peer"))
    open(os.path.join(pkg, "peer", "__init__.py"), "w").close()
    for name in ("IFNet_HDv3_v4_6.py", "warplayer.py"):
        with open(os.path.join(args.vsrife, "vsrife", name)) as src, open(os.path.join(pkg, "peer", name), "w") as dst:
            dst.write(src.read())
    sys.path.insert(0, pkg)
    from peer.IFNet_HDv3_v4_6 import IFNet  # noqa: E402

    net = IFNet().eval()
    weights = {k.replace("module.", ""): v for k, v in read_safetensors(args.weights).items() if "module." in k}
    net.load_state_dict(weights, strict=False)
    h = w = args.size
    g = torch.Generator().manual_seed(0)
    img0, img1 = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)
    t = torch.full((1, 1, h, w), 0.5)
    div = torch.tensor([(w - 1.0) / 2.0, (h - 1.0) / 2.0])
    hor = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(-1, -1, h, -1)
    ver = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(-1, -1, -1, w)
    grid = torch.cat([hor, ver], 1)
    with torch.inference_mode():
        net(img0, img1, t, div, grid)  # warm-up
        start = time.perf_counter()
        for _ in range(args.runs):
            net(img0, img1, t, div, grid)
        ms = (time.perf_counter() - start) * 1000 / args.runs
    print(json.dumps({"ms_per_frame": ms, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
