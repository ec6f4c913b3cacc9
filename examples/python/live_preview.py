#!/usr/bin/env python3
"""Generates through atelierd and saves every live preview as it arrives, then the result with its infotext.

    PYTHONPATH=clients/python python3 examples/python/live_preview.py --prompt "1girl, cherry blossoms" --out previews

The stubs are generated at build time into build/python (found automatically from a checkout).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))

from atelier_client import AtelierError, Client, Finished, Progress, Result, Started  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=None, help="daemon address (default: $ATELIER_SERVER or 127.0.0.1:50051)")
    parser.add_argument("--prompt", default="masterpiece, 1girl, cherry blossoms")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--scheduler", default="Karras")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--preview", default="PREVIEW_METHOD_APPROX_CHEAP",
                        help="PREVIEW_METHOD_APPROX_CHEAP, _APPROX_COMFYUI, _TAESD or _FULL")
    parser.add_argument("--out", default="previews", help="folder for the previews and the result")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    with Client(args.server) as client:
        job = client.txt2img(args.prompt, steps=args.steps, sampler_name=args.sampler, scheduler=args.scheduler,
                             width=args.size, height=args.size, seed=args.seed,
                             preview={"method": args.preview, "format": "IMAGE_FORMAT_PNG", "every_n_steps": 1})
        try:
            for event in job:
                if isinstance(event, Started):
                    print(f"job {event.job_id} started, seeds {event.seeds}")
                elif isinstance(event, Progress):
                    line = f"{event.pass_name} step {event.sampling_step}/{event.sampling_steps}, ETA {event.eta_seconds:.1f}s"
                    if event.preview is not None:
                        path = os.path.join(args.out, f"preview-{event.sampling_step:03d}.png")
                        with open(path, "wb") as f:
                            f.write(event.preview.data)
                        line += f" -> {path}"
                    print(line, flush=True)
                elif isinstance(event, Result):
                    path = os.path.join(args.out, f"result-{event.seed}.png")
                    with open(path, "wb") as f:
                        f.write(event.image)
                    print(path)
                    print(event.infotext)
                elif isinstance(event, Finished):
                    print(f"finished: {event.state}, timings {event.timings}")
        except AtelierError as error:
            print(f"live_preview: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
