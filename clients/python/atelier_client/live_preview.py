"""Live previews of a job, written to files as they stream (the example the package's README shows):

    atelier-live-preview --server 127.0.0.1:50051 --out previews "a red circle, blue background"

Each per-step preview is saved as step-NNN.jpg, the results as result-N.png, and progress is printed as it comes."""

import argparse
import os
import sys

from .client import AtelierError, Client, Progress, Queued, Result, Started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--server", default=os.environ.get("ATELIER_SERVER", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("ATELIER_TOKEN"))
    parser.add_argument("--out", default="previews")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=-1)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        with Client(args.server, token=args.token) as client:
            for event in client.txt2img(args.prompt, steps=args.steps, seed=args.seed):
                if isinstance(event, Queued):
                    print(f"queued at {event.position + 1}", flush=True)
                elif isinstance(event, Started):
                    print(f"started: seeds {list(event.seeds)}", flush=True)
                elif isinstance(event, Progress):
                    print(f"step {event.sampling_step}/{event.sampling_steps}", flush=True)
                    if event.preview is not None:
                        ext = "png" if event.preview.mime_type == "image/png" else "jpg"
                        with open(os.path.join(args.out, f"step-{event.sampling_step:03d}.{ext}"), "wb") as f:
                            f.write(event.preview.data)
                elif isinstance(event, Result):
                    path = os.path.join(args.out, f"result-{event.index}.png")
                    with open(path, "wb") as f:
                        f.write(event.image)
                    print(path, flush=True)
    except AtelierError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
