"""The tests that start services (Ray with Milvus Lite, a real `kb serve`, `kb mcp` over stdio),
run again and again while other processes hold every CPU: a slow start must never fail them.

    python benchmarks/service_starts.py [--runs 20] [--load 2]

``--load`` busy processes spin for the whole benchmark. Prints one JSON object as its last line:
runs, failures, and the seconds of each run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import time

TESTS = ["tests/test_distributed.py", "tests/test_api.py", "-m", "slow or processes"]


def spin() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--load", type=int, default=2)
    args = ap.parse_args()
    load = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
    for p in load:
        p.start()
    seconds, failures = [], []
    try:
        for i in range(args.runs):
            t0 = time.time()
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                               capture_output=True, text=True)
            seconds.append(round(time.time() - t0, 1))
            if r.returncode != 0:
                failures.append({"run": i, "tail": r.stdout[-3000:]})
                print(r.stdout[-3000:], file=sys.stderr, flush=True)
            print(f"run {i + 1}/{args.runs}: {'ok' if r.returncode == 0 else 'FAILED'} in {seconds[-1]} s",
                  file=sys.stderr, flush=True)
    finally:
        for p in load:
            p.terminate()
    print(json.dumps({"runs": args.runs, "load_processes": args.load, "failures": len(failures),
                      "failed": failures, "seconds": seconds}, ensure_ascii=False))


if __name__ == "__main__":
    main()
