#!/usr/bin/env python3
"""R-ESRGAN speed peer: BasicSR's own RRDBNet (basicsr/archs/rrdbnet_arch.py, the net Real-ESRGAN's inference code
builds for RealESRGAN_x4plus / x4plus_anime_6B), read from a checkout given on the command line and never copied
into this tree, on Debian's python3-torch: one untiled 4x pass over an RGB image of the given size.

    python3 bench/esrgan_peer.py --basicsr /path/to/BasicSR --blocks 6 --size 512

Prints {"seconds": ..., "threads": ...} as JSON. bench/esrgan_bench.cc runs it beside the C++ net when
ATELIER_ESRGAN_PEER names such a checkout."""

import argparse
import json
import os
import sys
import tempfile
import time
import types

import torch
import torch.nn as nn
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--basicsr", required=True, help="a checkout of XPixelGroup/BasicSR")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    # Their arch file as a module of its own; the registry and the three helpers it imports are trivial stand-ins
    # (the real basicsr package pulls in training dependencies).
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = types.SimpleNamespace(register=lambda: (lambda cls: cls))
    for name in ("basicsr", "basicsr.utils", "basicsr.archs"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["basicsr.utils.registry"] = registry
    util = types.ModuleType("basicsr.archs.arch_util")
    util.default_init_weights = lambda *a, **k: None
    util.make_layer = lambda block, n, **kw: nn.Sequential(*[block(**kw) for _ in range(n)])
    util.pixel_unshuffle = lambda x, scale: F.pixel_unshuffle(x, scale)
    sys.modules["basicsr.archs.arch_util"] = util
    with open(os.path.join(args.basicsr, "basicsr", "archs", "rrdbnet_arch.py")) as f:
        source = f.read()
    module = types.ModuleType("basicsr.archs.rrdbnet_arch")
    module.__package__ = "basicsr.archs"
    exec(compile(source, "rrdbnet_arch.py", "exec"), module.__dict__)
    net = module.RRDBNet(num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=args.blocks, num_grow_ch=32).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size, generator=g)
    with torch.no_grad():
        net(x[:, :, :64, :64])  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.runs):
            net(x).clamp(0, 1)
        seconds = (time.perf_counter() - t0) / args.runs
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
