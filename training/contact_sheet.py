#!/usr/bin/env python3
"""A contact sheet of the embedded model for the README: a few held-out captions (rows) x seeds (columns), generated
by a real atelierd through the Python client with WebUI defaults (DPM++ 2M, 20 steps, CFG 7), each cell upscaled
x2 (nearest) with the caption under its row.

    PYTHONPATH=clients/python python3 training/contact_sheet.py --daemon build/atelierd \
        --out docs/images/embedded-model-sheet.png"""

import argparse
import io
import os
import subprocess
import sys
import tempfile

from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402
from atelier_client import Client, Result  # noqa: E402

PROMPTS = [
    "a small red circle on the left, blue background",
    "a large yellow square in the centre, black background",
    "a large green triangle at the top, white background",
    "a small purple circle on the left and a small orange square on the right, white background",
    "a large blue square at the bottom, yellow background",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    cell, pad, text_h = 128, 6, 16
    sheet = Image.new("RGB", (pad + args.seeds * (cell + pad), len(PROMPTS) * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    with tempfile.TemporaryDirectory() as tmp:
        daemon = subprocess.Popen([args.daemon, "--listen", "127.0.0.1:0", "--models-dir", tmp],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        address = daemon.stdout.readline().split()[-1]
        try:
            with Client(address) as client:
                for row, prompt in enumerate(PROMPTS):
                    y = pad + row * (cell + text_h + pad)
                    for col in range(args.seeds):
                        events = client.txt2img(prompt, steps=20, cfg_scale=7.0, seed=100 + col,
                                                sampler_name="DPM++ 2M")
                        result = [e for e in events if isinstance(e, Result)][0]
                        image = Image.open(io.BytesIO(result.image)).convert("RGB").resize((cell, cell),
                                                                                         Image.NEAREST)
                        sheet.paste(image, (pad + col * (cell + pad), y))
                    draw.text((pad, y + cell + 2), f"{prompt}   (seeds 100-{100 + args.seeds - 1})", fill="black")
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
