#!/usr/bin/env python3
"""The cost model's calibration on a real daemon: a few jobs of different sizes teach it this device's rates, then
jobs of shapes it has not seen are estimated (Started.estimated_seconds) and run; prints estimate, measured seconds
(the stages the estimate covers: text, sampling, upscale, decode) and the ratio.

    python3 bench/cost_calibration.py --daemon build/atelierd [--model-args ...]

Needs PYTHONPATH=clients/python (the client and its stubs)."""

import argparse
import os
import subprocess
import sys
import tempfile

from atelier_client import Client, Finished, Started

CALIBRATE = [  # (width, height, steps, extra fields)
    (64, 64, 8, {}),
    (256, 256, 4, {}),
    (128, 128, 8, {}),
    (384, 384, 2, {}),
]
CHECK = [
    ("192x320, 10 steps", 192, 320, 10, {}),
    ("448x448, 3 steps", 448, 448, 3, {}),
    ("128x128, batch 4", 128, 128, 6, {"batch_size": 4}),
    ("256x256, Heun 4 steps", 256, 256, 4, {"sampler_name": "Heun"}),
    ("128x128, 3 AND parts", 128, 128, 6, {"prompt": "a red circle AND a blue square AND green"}),
    ("128 -> 256 hires", 128, 128, 6, {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5}),
    ("512x512, 2 steps", 512, 512, 2, {}),
]


def run(client, width, height, steps, extra):
    fields = dict(width=width, height=height, steps=steps, seed=1, sampler_name="Euler")
    fields.update(extra)
    prompt = fields.pop("prompt", "a red circle")
    estimate, timings = 0.0, {}
    for event in client.txt2img(prompt, **fields):
        if isinstance(event, Started):
            estimate = event.estimated_seconds
        if isinstance(event, Finished):
            timings = event.timings
    measured = sum(timings.get(k, 0.0) for k in ("text", "sampling", "upscale", "decode"))
    if os.environ.get("COST_STAGES"):
        print("   ", {k: round(v, 3) for k, v in timings.items()})
    return estimate, measured


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemon", required=True)
    parser.add_argument("daemon_args", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = subprocess.Popen([args.daemon, "--listen", "127.0.0.1:0", "--models-dir", tmp, *args.daemon_args],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        address = daemon.stdout.readline().split()[-1]
        try:
            with Client(address) as client:
                run(client, 64, 64, 2, {})  # warm-up (first-call allocations), also calibrates
                for width, height, steps, extra in CALIBRATE:
                    run(client, width, height, steps, extra)
                    run(client, width, height, steps, extra)
                # The first run of a new size also pays one-time kernel set-up (oneDNN primitives, allocations):
                # each unseen shape runs twice, "cold" then "warm".
                print(f"{'shape':28} {'estimate s':>10} {'cold s':>8} {'ratio':>6} {'warm s':>8} {'ratio':>6}")
                worst = {"cold": 1.0, "warm": 1.0}
                for name, width, height, steps, extra in CHECK:
                    row = []
                    for kind in ("cold", "warm"):
                        estimate, measured = run(client, width, height, steps, extra)
                        ratio = estimate / measured if measured > 0 else float("nan")
                        worst[kind] = max(worst[kind], ratio, 1 / ratio if ratio > 0 else float("inf"))
                        row.append((estimate, measured, ratio))
                    print(f"{name:28} {row[0][0]:10.3f} {row[0][1]:8.3f} {row[0][2]:6.2f} {row[1][1]:8.3f} "
                          f"{row[1][0] / row[1][1]:6.2f}")
                print(f"worst ratio (either way): cold {worst['cold']:.2f}, warm {worst['warm']:.2f}")
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
