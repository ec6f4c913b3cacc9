#!/usr/bin/python3
"""atelier-web's cost, measured beside the same work over gRPC (issue 27's speed bars):

1. A 20-step txt2img on the embedded model through POST /sdapi/v1/txt2img versus the same request through the
   daemon's gRPC API (the Python client), alternated, N pairs: the median ratio of wall times (bar: <= 1.05).
2. How long after the daemon emits a preview it reaches an HTTP client of /events (server-sent events; the event
   carries the daemon's publish time, same clock) and, with chromium installed, the page in a headless browser
   (bar: p99 <= 50 ms on loopback).

Run from the build tree: bench/web_gateway.py [--pairs N] [--jobs N]. Prints JSON."""

import argparse
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("ATELIER_BUILD", os.path.join(ROOT, "build"))
sys.path[:0] = [os.path.join(ROOT, "clients", "python"),
                os.path.join(ROOT, "tests", "python")]
os.environ.setdefault("ATELIER_DAEMON", os.path.join(BUILD, "atelierd"))
os.environ.setdefault("ATELIER_WEB", os.path.join(BUILD, "atelier-web"))

import requests  # noqa: E402

from atelier_client import Client  # noqa: E402
from daemon_process import DaemonProcess  # noqa: E402
from gateway_process import GatewayProcess  # noqa: E402

PAYLOAD = {"prompt": "a red circle on the left, blue background", "steps": 20, "seed": 1, "width": 64,
           "height": 64, "sampler_name": "DPM++ 2M"}


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def overhead(daemon, gateway, pairs):
    ratios, http_s, grpc_s = [], [], []
    with Client(daemon.address) as c:
        c.webui(dict(PAYLOAD)).wait()  # warm both paths
        requests.post(gateway.url + "/sdapi/v1/txt2img", json=PAYLOAD, timeout=600).raise_for_status()
        for i in range(pairs):
            payload = dict(PAYLOAD, seed=100 + i)
            order = ("grpc", "http") if i % 2 == 0 else ("http", "grpc")
            times = {}
            for way in order:
                start = time.perf_counter()
                if way == "grpc":
                    c.webui(dict(payload)).wait()
                else:
                    requests.post(gateway.url + "/sdapi/v1/txt2img", json=payload, timeout=600).raise_for_status()
                times[way] = time.perf_counter() - start
            ratios.append(times["http"] / times["grpc"])
            http_s.append(times["http"])
            grpc_s.append(times["grpc"])
    return {"pairs": pairs, "grpc_median_s": statistics.median(grpc_s), "http_median_s": statistics.median(http_s),
            "ratio_median": statistics.median(ratios), "ratio_p90": percentile(ratios, 90)}


def sse_latency(gateway, jobs):
    latencies = []
    stop = threading.Event()
    ready = threading.Event()

    def listen():
        with requests.get(gateway.url + "/events", stream=True, timeout=600) as stream:
            ready.set()
            event = None
            for line in stream.iter_lines(decode_unicode=True):
                now_us = time.time() * 1e6
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "progress":
                    data = json.loads(line[6:])
                    if data.get("preview") and data.get("published_us"):
                        latencies.append((now_us - data["published_us"]) / 1000)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(30)
    for i in range(jobs):
        requests.post(gateway.url + "/sdapi/v1/txt2img", json=dict(PAYLOAD, seed=200 + i), timeout=600)
    time.sleep(0.5)
    stop.set()
    return {"previews": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies)}


def browser_latency(gateway, jobs):
    from devtools import Browser, chromium_binary
    if not chromium_binary():
        return None
    browser = Browser()
    try:
        browser.navigate(gateway.url + "/")
        browser.wait_for("document.getElementById('status').dataset.state === 'ok'")
        for i in range(jobs):
            requests.post(gateway.url + "/sdapi/v1/txt2img", json=dict(PAYLOAD, seed=300 + i), timeout=600)
        time.sleep(0.5)
        latencies = browser.evaluate("window.atelierPreviewLatencyMs")
    finally:
        browser.close()
    return {"previews": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    daemon = DaemonProcess()
    gateway = GatewayProcess(daemon.address)
    try:
        gateway.wait_reachable()
        result = {"machine": os.uname().machine, "cores": os.cpu_count(),
                  "overhead": overhead(daemon, gateway, args.pairs),
                  "sse_preview_latency": sse_latency(gateway, args.jobs),
                  "browser_preview_latency": browser_latency(gateway, args.jobs)}
    finally:
        gateway.stop()
        daemon.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
