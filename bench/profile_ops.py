#!/usr/bin/python3
"""Sums a libtorch chrome-trace profile (ATELIER_PROFILE=FILE build/bench/atelier_bench ...) per op name: self time
(an op's time less its child ops'), calls and share, largest first.

usage: bench/profile_ops.py FILE [--top 30]"""
import argparse, collections, json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    with open(args.file) as f:
        text = f.read().rstrip().rstrip(",")
    events = json.loads(text if text.endswith("]") else text + "]")
    spans = sorted((e for e in events if e.get("ph") == "X"), key=lambda e: (e.get("tid"), e["ts"], -e["dur"]))
    self_us, calls = collections.Counter(), collections.Counter()
    stack = []  # (end, name) per thread, in order
    for e in spans:
        start, end = e["ts"], e["ts"] + e["dur"]
        while stack and (stack[-1][2] != e.get("tid") or stack[-1][0] <= start):
            stack.pop()
        if stack:
            self_us[stack[-1][1]] -= e["dur"]
        self_us[e["name"]] += e["dur"]
        calls[e["name"]] += 1
        stack.append((end, e["name"], e.get("tid")))
    total = sum(self_us.values())
    print(f"{'op':48s} {'self s':>8s} {'share':>6s} {'calls':>7s}")
    for name, us in self_us.most_common(args.top):
        print(f"{name[:48]:48s} {us / 1e6:8.3f} {us / total:6.1%} {calls[name]:7d}")
    print(f"{'total':48s} {total / 1e6:8.3f}")


if __name__ == "__main__":
    main()
