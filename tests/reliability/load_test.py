"""Load on a real atelierd (loopback, the embedded model): 100 concurrent streaming clients, each on its own
connection, in a mix of roles, against one daemon:

  txt2img      45  submit and read every event
  img2img      15  the same with an init image
  cancel       10  submit a long job and cancel it once it has been queued
  watch        15  watch a job another client submitted, from its history
  slow          10  read one event every 0.3 s
  never-read    5  submit, read nothing until everyone else is done, then read all

Checked: every submitter gets its one result exactly once and SUCCEEDED (the never-readers too: results are
reliable events), every watcher the same result bytes exactly once, every canceller CANCELLED; no client waits
past the deadline (no deadlock); the daemon's RSS stays within a bound. Reported: peak RSS, p50 / p99 of
queue-to-first-event (call start to the first event) and of event latency (publish to receipt, on one clock).

    python3 tests/reliability/load_test.py [--clients 100] [--json out.json]
(ctest runs it as reliability.load with ATELIER_DAEMON and PYTHONPATH set; the figures go into README.md here.)"""

import argparse
import io
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

from atelier_client import Client  # noqa: E402,F401  (imports the generated stubs)
from atelier.v1 import generation_pb2, generation_pb2_grpc  # noqa: E402
from daemon_process import DaemonProcess  # noqa: E402

ROLES = [("txt2img", 45), ("img2img", 15), ("cancel", 10), ("watch", 15), ("slow", 10), ("never-read", 5)]
DEADLINE_S = 420


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def init_png():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class Run:
    def __init__(self, address, clients):
        self.address = address
        self.lock = threading.Lock()
        self.first_event_s, self.event_lag_s = [], []
        self.results = {}        # job id -> (index, seed, image bytes) the submitter got
        self.watched = []        # (job id, [(index, seed, bytes)]) per watcher
        self.outcomes = []       # (role, ok, detail)
        self.job_ids = []        # submitted by plain readers (watch targets)
        self.job_known = threading.Condition(self.lock)
        self.others_done = threading.Event()
        self.roles = [role for role, n in ROLES for _ in range(max(1, round(n * clients / 100)))]
        random.Random(7).shuffle(self.roles)

    def channel(self):
        # Each client on its own connection, as separate users are.
        return grpc.insecure_channel(self.address, options=[("grpc.use_local_subchannel_pool", 1),
                                                            ("grpc.max_receive_message_length", 64 << 20)])

    def request(self, role, i):
        r = generation_pb2.GenerateRequest(prompt="a red circle on the left, blue background", steps=3, seed=i,
                                           mode=generation_pb2.MODE_TXT2IMG)
        if role == "img2img":
            r.mode = generation_pb2.MODE_IMG2IMG
            r.init_images.append(init_png())
            r.denoising_strength = 0.6
            r.steps = 4
        if role == "cancel":
            r.steps = 200
        return r

    def record(self, role, ok, detail=""):
        with self.lock:
            self.outcomes.append((role, ok, detail))

    def read(self, call, started, role, slow=False, first=True):
        """Reads a stream to its end: (results [(index, seed, bytes)], final code). `first`: the next event is the
        stream's first, timed from `started` (not for never-readers and watchers, who wait on purpose)."""
        results = []
        first = first and role not in ("never-read", "watch")
        try:
            for event in call:
                now = time.time()
                if first:
                    with self.lock:
                        self.first_event_s.append(now - started)
                    first = False
                if role in ("txt2img", "img2img", "watch"):
                    with self.lock:
                        self.event_lag_s.append(now - event.published_unix_us / 1e6)
                if event.WhichOneof("event") == "result":
                    results.append((event.result.index, event.result.seed, event.result.image.data))
                if slow:
                    time.sleep(0.3)
            return results, grpc.StatusCode.OK, event.job_id
        except grpc.RpcError as error:
            return results, error.code(), None

    def client(self, role, i):
        with self.channel() as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            started = time.time()
            if role == "watch":
                with self.job_known:
                    self.job_known.wait_for(lambda: len(self.job_ids) > i % 20, timeout=120)
                    target = self.job_ids[i % len(self.job_ids)] if self.job_ids else None
                if target is None:
                    return self.record(role, False, "no job to watch")
                results, code, _ = self.read(stub.Watch(generation_pb2.WatchRequest(job_id=target)), started, role)
                with self.lock:
                    self.watched.append((target, results))
                # A job that already ended is no longer watchable (NOT_FOUND): that is not a loss.
                return self.record(role, code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), str(code))
            call = stub.Generate(self.request(role, i), metadata=(("atelier-client", f"load-{i}"),))
            if role == "never-read":
                self.others_done.wait(timeout=DEADLINE_S)
                results, code, job_id = self.read(call, started, role)
            elif role == "cancel":
                first = next(call)
                stub.Cancel(generation_pb2.CancelRequest(job_id=first.job_id), timeout=30)
                results, code, job_id = self.read(call, started, role)
                return self.record(role, code == grpc.StatusCode.CANCELLED, str(code))
            else:
                iterator = iter(call)
                first = next(iterator)
                with self.job_known:
                    if role in ("txt2img", "img2img"):
                        self.job_ids.append(first.job_id)
                        self.job_known.notify_all()
                with self.lock:
                    self.first_event_s.append(time.time() - started)
                results, code, job_id = self.read(iterator, started, role, slow=role == "slow", first=False)
                job_id = first.job_id
            ok = code == grpc.StatusCode.OK and [r[0] for r in results] == [0]
            if ok:
                with self.lock:
                    self.results[job_id] = results[0]
            self.record(role, ok, f"{code}, {len(results)} result(s)")

    def go(self, pid):
        peak, stop = [rss_bytes(pid)], threading.Event()
        baseline = peak[0]

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes(pid))
                time.sleep(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.time()
        threads = [threading.Thread(target=self.client, args=(role, i), daemon=True) for i, role in enumerate(self.roles)]
        for t in threads:
            t.start()
        others = [t for t, role in zip(threads, self.roles) if role != "never-read"]
        for t in others:
            t.join(timeout=max(1, DEADLINE_S - (time.time() - start)))
        self.others_done.set()
        for t in threads:
            t.join(timeout=max(1, DEADLINE_S - (time.time() - start)))
        stop.set()
        hung = sum(t.is_alive() for t in threads)
        return {"clients": len(self.roles), "seconds": round(time.time() - start, 1), "hung_clients": hung,
                "rss_baseline_mb": round(baseline / 2**20), "rss_peak_mb": round(peak[0] / 2**20)}

    def check(self, summary):
        failures = [o for o in self.outcomes if not o[1]]
        lost = 0
        for target, results in self.watched:
            if target in self.results and results and results != [self.results[target]]:
                lost += 1
        summary.update({
            "outcomes": {role: sum(1 for r, ok, _ in self.outcomes if r == role and ok) for role, _ in ROLES},
            "failures": failures[:10], "watchers_mismatched": lost,
            "first_event_ms": {"p50": round(percentile(self.first_event_s, 50) * 1e3, 1),
                               "p99": round(percentile(self.first_event_s, 99) * 1e3, 1)},
            "event_latency_ms": {"p50": round(percentile(self.event_lag_s, 50) * 1e3, 2),
                                 "p99": round(percentile(self.event_lag_s, 99) * 1e3, 2),
                                 "events": len(self.event_lag_s)},
        })
        return not failures and lost == 0 and summary["hung_clients"] == 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--json")
    parser.add_argument("--rss-bound-mb", type=int, default=1536, help="peak RSS over the baseline allowed")
    args = parser.parse_args()
    daemon = DaemonProcess(extra_args=("--max-queue", "512"))
    try:
        run = Run(daemon.address, args.clients)
        summary = run.go(daemon.process.pid)
        ok = run.check(summary)
        ok = ok and summary["rss_peak_mb"] - summary["rss_baseline_mb"] <= args.rss_bound_mb
    finally:
        code = daemon.stop()
    summary["daemon_exit"] = code
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    assert summary["hung_clients"] == 0, "clients still waiting at the deadline: a deadlock"
    assert not summary["failures"], summary["failures"]
    assert summary["watchers_mismatched"] == 0, "a watcher saw other result bytes than the submitter"
    assert ok, "peak RSS over the bound"
    assert code == 0, f"the daemon exited {code} after the load"


if __name__ == "__main__":
    main()
