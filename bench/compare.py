#!/usr/bin/python3
"""Atelier beside the PyTorch-eager peer (../shared/peers/torch-eager/peer.py: CompVis's own UNet and VAE decoder
at full SD 1.5 size on the same Debian torch), interleaved for N rounds on the same machine, as ratios.

usage: bench/compare.py [--rounds N] [--items unet256fp32,unet256bf16,...] [--bench build/bench/atelier_bench]
                        [--write docs/performance.md]

Items (default: all): unet{256,512}{fp32,bf16} (one CFG step, batch 2), vae{256,512}{fp32,bf16} (one decode) and
txt2img512{fp32,bf16}: the whole daemon (bench/served.py: a full-size SD 1.5 fp16 file loaded warm, a 512x512
20-step Euler a txt2img through the Python client) beside the peer's 20 UNet steps + one decode of the same round,
with the daemon's load, time to the first step, s/it and peak RSS against their goals.
Each round runs every item once on each side, alternating which side goes first; the peer reports the median of
its runs after a warm-up, Atelier (atelier_bench's BM_UNetStep / BM_VaeDecode) the mean of 2 after its model is
built. The table gives both times per round, each round's ratio Atelier / peer, the median ratio, Atelier's
fraction of the same dtype's GEMM peak (measured in its process) and the goal from issue 24. bf16 items say so and
are skipped on a CPU without AVX-512 BW/VL/DQ. Needs python3-torch for the peer."""
import argparse, datetime, json, os, platform, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(ROOT, "..", "shared", "peers", "torch-eager", "peer.py")
GOALS = {"unet": {"fp32": 0.30, "bf16": 0.25}, "vae": {"fp32": 0.50, "bf16": 0.50},
         "txt2img": {"fp32": 0.30, "bf16": 0.25}}
RSS_GOAL_MIB = {"fp32": 4.8e9 / 2**20, "bf16": 2.8e9 / 2**20}
LOAD_GOAL_S = 2.0
SERVED = os.path.join(HERE, "served.py")
ALL = [f"{w}{s}{d}" for w in ("unet", "vae") for s in (256, 512) for d in ("fp32", "bf16")] + \
      ["txt2img512fp32", "txt2img512bf16"]


def cpu():
    model, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    shown = [x for x in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
                         "amx_tile", "amx_bf16", "amx_int8") if x in flags]
    return model, shown, flags


def parse(item):
    work = next(w for w in ("unet", "vae", "txt2img") if item.startswith(w))
    rest = item[len(work):]
    return work, int(rest[:3]), rest[3:]


def run_peer(work, size, dtype, runs):
    out = subprocess.run([sys.executable, PEER, work, str(size), dtype, str(runs)], capture_output=True, text=True,
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"peer {work} {size} {dtype}: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def first_touch_gb_per_s(gib=1):
    """Writing 1 GiB of fresh pages, then the same pages again (numpy), in GB/s."""
    import numpy as np
    t = time.perf_counter()
    a = np.ones(gib << 27)
    first = time.perf_counter() - t
    t = time.perf_counter()
    a[:] = 2
    again = time.perf_counter() - t
    return (gib << 30) / 1e9 / first, (gib << 30) / 1e9 / again


def run_served(size, dtype):
    out = subprocess.run([sys.executable, SERVED, "--dtype", {"fp32": "float32", "bf16": "bfloat16"}[dtype],
                          "--size", str(size)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"served.py {size} {dtype}: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_atelier(bench, work, size, dtype):
    name = {"unet": "BM_UNetStep", "vae": "BM_VaeDecode"}[work]
    arg = 0 if dtype == "fp32" else 1
    out = subprocess.run([bench, f"--benchmark_filter=^{name}/{size}/{arg}/", "--benchmark_format=json"],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"atelier_bench {name}/{size}/{arg}: {out.stderr.strip()[-400:]}")
    result = json.loads(out.stdout)["benchmarks"][0]
    if result.get("error_occurred"):
        raise RuntimeError(result.get("error_message", "skipped"))
    return result["s/call"], result["of_peak"], result["peak_RSS_MiB"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--items", default=",".join(ALL))
    ap.add_argument("--peer-runs", type=int, default=1)
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "atelier_bench"))
    ap.add_argument("--write", help="also write the report (markdown) to this file")
    args = ap.parse_args()
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    unknown = [i for i in items if i not in ALL]
    if unknown:
        sys.exit(f"unknown items {unknown}; valid: {', '.join(ALL)}")
    model, shown, flags = cpu()
    bf16_ok = {"avx512bw", "avx512vl", "avx512dq"} <= flags
    rows = {i: {"peer": [], "atelier": [], "of_peak": [], "rss": [], "served": [], "note": ""} for i in items}
    for r in range(args.rounds):
        peer_this_round = {}
        for item in items:
            work, size, dtype = parse(item)
            if dtype == "bf16" and not bf16_ok:
                rows[item]["note"] = "skipped: this CPU has no AVX-512 BW/VL/DQ (no bf16 path)"
                continue

            def peer():
                if work != "txt2img":
                    return run_peer(work, size, dtype, args.peer_runs)
                # The peer's whole image: 20 UNet steps and one decode, reusing this round's figures.
                parts = {}
                for w in ("unet", "vae"):
                    key = f"{w}{size}{dtype}"
                    parts[w] = peer_this_round.get(key) or run_peer(w, size, dtype, args.peer_runs)
                return 20 * parts["unet"] + parts["vae"]

            def atelier():
                if work != "txt2img":
                    return run_atelier(args.bench, work, size, dtype)
                served = run_served(size, dtype)
                rows[item]["served"].append(served)
                return served["total_seconds"], None, served["peak_rss_mib"]

            try:
                sides = [("peer", peer), ("atelier", atelier)]
                for side, call in (sides if r % 2 == 0 else sides[::-1]):
                    value = call()
                    if side == "peer":
                        rows[item]["peer"].append(value)
                        peer_this_round[item] = value
                    else:
                        rows[item]["atelier"].append(value[0])
                        if value[1] is not None:
                            rows[item]["of_peak"].append(value[1])
                        rows[item]["rss"].append(value[2])
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                rows[item]["note"] = f"failed: {e}"
            print(f"round {r + 1} {item}: peer {rows[item]['peer'][-1:]} atelier {rows[item]['atelier'][-1:]}",
                  file=sys.stderr, flush=True)

    touch = first_touch_gb_per_s()
    lines = [f"# Performance: Atelier beside PyTorch eager", "",
             f"Made by `bench/compare.py --rounds {args.rounds}` on {datetime.date.today().isoformat()}.",
             f"CPU: {model}, {os.cpu_count()} threads; ISA: {', '.join(shown) or 'none of note'}. "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}. Fresh memory: first touch "
             f"{touch[0]:.2f} GB/s, rewriting it {touch[1]:.1f} GB/s (a process's new pages, e.g. a load's converted "
             "weights, cost the first rate; a virtual machine's host may make it slow).", "",
             "Seconds per call (UNet: one CFG step, batch 2; VAE: one decode; txt2img: the served 20-step image, "
             "request to result, beside the peer's 20 steps + decode), per round; ratio = Atelier / peer (lower is "
             "better); of peak = Atelier's GFLOP/s over the same dtype's GEMM peak in its process; peak RSS: the "
             "benchmark process, or the daemon for txt2img.", "",
             "| item | peer s | Atelier s | ratio per round | median ratio | goal | Atelier of peak | Atelier peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for item in items:
        row = rows[item]
        work, size, dtype = parse(item)
        n = min(len(row["peer"]), len(row["atelier"]))
        if n == 0:
            lines.append(f"| {item} | | | {row['note'] or 'no result'} | | | | |")
            continue
        ratios = [a / p for a, p in zip(row["atelier"][:n], row["peer"][:n])]
        goal = GOALS[work][dtype]
        median = statistics.median(ratios)
        of_peak = f"{statistics.median(row['of_peak']):.2f}" if row["of_peak"] else ""
        lines.append(
            f"| {item} | {' / '.join(f'{p:.2f}' for p in row['peer'])} | {' / '.join(f'{a:.2f}' for a in row['atelier'])} "
            f"| {' / '.join(f'{x:.2f}' for x in ratios)} | **{median:.2f}** | ≤ {goal:.2f} {'met' if median <= goal else 'not met'} "
            f"| {of_peak} | {max(row['rss']):.0f} |")
    served = [(item, s) for item in items for s in rows[item]["served"]]
    if served:
        lines += ["", "The whole daemon (bench/served.py), per run: start = exec to serving with the checkpoint loaded "
                  "(warm: page cache and hash cache), load = the daemon's own load figure, first step = request to the "
                  "first step's progress event, s/it = steady seconds per step, total = request to result.", "",
                  "| item | compute dtype | start s | load s (goal ≤ 2) | first step s | s/it | decode s | total s "
                  "| peak RSS MiB (goal) |", "|---|---|---|---|---|---|---|---|---|"]
        for item, s in served:
            dtype = parse(item)[2]
            timings = s.get("timings", {})
            decode = next((v for k, v in timings.items() if "decode" in k), None)
            rss = s.get("peak_rss_mib", 0)
            lines.append(
                f"| {item} | {s.get('compute_dtype', '')} | {s.get('start_seconds', '')} | {s.get('load_seconds', '')} "
                f"{'met' if s.get('load_seconds', 99) <= LOAD_GOAL_S else 'not met'} | {s.get('first_step_seconds', '')} "
                f"| {s.get('seconds_per_step', '')} | {decode if decode is not None else ''} | {s.get('total_seconds', '')} "
                f"| {rss:.0f} (≤ {RSS_GOAL_MIB[dtype]:.0f} {'met' if rss <= RSS_GOAL_MIB[dtype] else 'not met'}) |")
        lines += ["", "RSS of the served jobs (MiB): " + "; ".join(
            f"{item}: after load {s.get('rss_after_load_mib', '')}, peaks to the first step / sampling / decode "
            + " / ".join(str(s.get("rss_peak_mib_by_phase", {}).get(k, "")) for k in ("to_first_step", "sampling", "decode"))
            + f", after the job {s.get('rss_after_job_mib', '')}" for item, s in served)]
        lines += ["", "Stage timings of the served jobs: " + "; ".join(
            f"{item}: " + ", ".join(f"{k} {v}" for k, v in s.get("timings", {}).items()) for item, s in served)]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        with open(args.write, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
