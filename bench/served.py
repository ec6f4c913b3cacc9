#!/usr/bin/python3
"""The whole daemon serving a full-size SD 1.5 checkpoint: start-up and load, a 512x512 txt2img through the
Python client, and the process's peak RSS.

usage: bench/served.py [--dtype float32|bfloat16|auto] [--steps 20] [--size 512] [--sampler "Euler a"]
                       [--daemon build/atelierd] [--dir $ATELIER_BENCH_DIR or /tmp]

The checkpoint is a 2.1 GB float16 safetensors file with every tensor of ../shared/manifests/sd15-ldm.json
(random values scaled as bench/random_weights.cc does: speed does not depend on them), written once to DIR/atelier-bench-models and reused. The hash cache is primed
by one start first, so the load measured is a warm one (file in the page cache, SHA-256 cached), as a user's
restart is. Prints one JSON line: start_seconds (exec to serving, the checkpoint loaded), load_seconds (the
daemon's own figure), first_step_seconds (request sent to the first step's progress event: the model prepared for
the job), seconds_per_step (steady: between the first and the last step's events), total_seconds (request to
result), decode_seconds and the job's other stage timings, peak_rss_mib (VmHWM of the daemon after the job: the
load included), rss_after_load_mib, rss_file_* (file-backed: code and mappings)
and rss_peak_mib_by_phase (VmRSS sampled every 10 ms: to_first_step, sampling, decode).
Needs clients/python (the client and its stubs) on PYTHONPATH; set here when run from the tree."""
import argparse, json, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "clients", "python")]
MANIFEST = os.path.join(ROOT, "..", "shared", "manifests", "sd15-ldm.json")


def write_checkpoint(path):
    import numpy as np
    with open(MANIFEST) as f:
        shapes = json.load(f)["tensors"]
    rng = np.random.default_rng(0)
    # The LDM schedule buffers as SD 1.5 has them (the daemon, like WebUI, samples with the checkpoint's).
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    schedule = {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
                "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ac),
                "log_one_minus_alphas_cumprod": np.log(1 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1 / ac),
                "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ac - 1), "posterior_variance": post_var,
                "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
                "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1 - ac),
                "posterior_mean_coef2": (1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac)}
    header, offset, arrays = {"__metadata__": {"format": "pt"}}, 0, []
    for name, shape in shapes.items():
        count = int(np.prod(shape)) if shape else 1
        if "position_ids" in name:
            a = np.arange(count, dtype=np.int64).reshape(shape)
            dtype = "I64"
        elif name in schedule:
            a = schedule[name].astype(np.float32).reshape(shape)
            dtype = "F32"
        else:
            # As bench/random_weights.cc: norm scales about 1, biases small, matrices scaled by their fan-in.
            a = rng.standard_normal(count, dtype=np.float32)
            if len(shape) == 1:
                a = 1 + 0.1 * a if name.endswith("weight") else 0.1 * a
            else:
                a /= np.sqrt(np.prod(shape[1:]))
            a = a.astype(np.float16).reshape(shape)
            dtype = "F16"
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path + ".partial", "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for a in arrays:
            f.write(a.tobytes())
    os.replace(path + ".partial", path)


def start(daemon, models, cache, dtype, extra=()):
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    t0 = time.perf_counter()
    p = subprocess.Popen([daemon, "--listen", "127.0.0.1:0", "--models-dir", models, "--cache-dir", cache,
                          "--dtype", dtype, *extra], stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    started = time.perf_counter() - t0
    if not line.startswith("atelierd listening on "):
        p.kill()
        log.seek(0)
        raise RuntimeError(f"atelierd did not start: {log.read()[-2000:]}")
    return p, line.split()[-1], started, log


def stop(p, log):
    p.terminate()
    p.wait(timeout=60)
    log.seek(0)
    text = log.read()
    log.close()
    os.unlink(log.name)
    return text


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """VmRSS of a process every 10 ms, the peak kept per phase (the caller names the phase as the job goes on)."""

    def __init__(self, pid):
        import threading
        self.pid, self.phase, self.peaks = pid, "idle", {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.01):
            rss = rss_mib(self.pid)
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def stop(self):
        self.done.set()
        self.thread.join()
        return {k: round(v) for k, v in self.peaks.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--sampler", default="Euler a")
    ap.add_argument("--daemon", default=os.path.join(ROOT, "build", "atelierd"))
    ap.add_argument("--dir", default=os.environ.get("ATELIER_BENCH_DIR", "/tmp"))
    ap.add_argument("--daemon-arg", action="append", default=[], help="an extra atelierd argument (repeatable)")
    args = ap.parse_args()
    from atelier_client import Client, Finished, Progress, Result

    # In the models folder itself: the daemon follows no symlink out of it.
    models = os.path.join(args.dir, "atelier-bench-models")
    os.makedirs(os.path.join(models, "Stable-diffusion"), exist_ok=True)
    checkpoint = os.path.join(models, "Stable-diffusion", "sd15-f16-random.safetensors")
    if not os.path.exists(checkpoint):
        write_checkpoint(checkpoint)
    cache = os.path.join(args.dir, "atelier-bench-cache")
    if not os.path.exists(os.path.join(cache, "hashes.json")):
        primer, _, _, primer_log = start(args.daemon, models, cache, args.dtype)  # hashes the file once
        stop(primer, primer_log)
    subprocess.run(["cat", checkpoint], stdout=subprocess.DEVNULL, check=True)  # in the page cache

    p, address, started, log = start(args.daemon, models, cache, args.dtype, args.daemon_arg)
    out = {"dtype": args.dtype, "size": args.size, "steps": args.steps, "sampler": args.sampler,
           "start_seconds": round(started, 3)}
    out["rss_after_load_mib"] = round(rss_mib(p.pid))
    out["rss_file_after_load_mib"] = round(rss_mib(p.pid, "RssFile"))
    rss = RssSampler(p.pid)
    try:
        with Client(address) as client:
            rss.phase = "to_first_step"
            t0 = time.perf_counter()
            steps, finished = [], None
            for event in client.txt2img("a photo of a cat", steps=args.steps, sampler_name=args.sampler,
                                        width=args.size, height=args.size, seed=1, cfg_scale=7):
                now = time.perf_counter() - t0
                if isinstance(event, Progress) and event.sampling_step > len(steps):
                    steps.append(now)
                    rss.phase = "sampling" if len(steps) < args.steps else "decode"
                elif isinstance(event, Finished):
                    finished = event
            total = time.perf_counter() - t0
        if finished is None or finished.state != "JOB_STATE_SUCCEEDED":
            raise RuntimeError(f"the job did not succeed: {finished}")
        out["first_step_seconds"] = round(steps[0], 3) if steps else None
        if len(steps) >= 2:
            out["seconds_per_step"] = round((steps[-1] - steps[0]) / (len(steps) - 1), 3)
        out["total_seconds"] = round(total, 3)
        out["timings"] = {k: round(v, 3) for k, v in finished.timings.items()}
        out["peak_rss_mib"] = round(peak_rss_mib(p.pid))
        time.sleep(0.5)  # the queue empties and the daemon hands its cached blocks back
        out["rss_after_job_mib"] = round(rss_mib(p.pid))
        out["rss_file_after_job_mib"] = round(rss_mib(p.pid, "RssFile"))
    finally:
        out["rss_peak_mib_by_phase"] = rss.stop()
        text = stop(p, log)
    for line in text.splitlines():
        if " loaded " in line and " in " in line:
            try:
                out["load_seconds"] = float(line.rsplit(") in ", 1)[1].split(" s")[0])
            except (IndexError, ValueError):
                pass
        if "serving the embedded model" in line:
            raise RuntimeError("atelierd served its embedded model, not the benchmark checkpoint")
        if "compute dtype" in line:
            out["compute_dtype"] = line.split("compute dtype ", 1)[1].split(" ")[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
