"""Wall time of a whole `kb search` process on the sample corpus (default model).

    python benchmarks/cli_time.py [--runs 7]

Indexes corpus/ into a temporary folder once, then times `kb search QUESTION --index DIR`
as a fresh process, several times. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).parent / "kb"  # the installed console script, as a user runs it
KB = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "kb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--question", default="组工干部为什么要站在学习贯彻的最前列")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(KB + ["index", str(ROOT / "corpus"), "--index", tmp, "-q"], check=True,
                       capture_output=True)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(KB + ["search", args.question, "--index", tmp, "-k", "5"], check=True,
                           capture_output=True)
            times.append(time.perf_counter() - t0)
    a = np.asarray(times)
    print(json.dumps({"kb_search_wall_s": {"median": round(float(np.median(a)), 3), "min": round(float(a.min()), 3),
                                           "max": round(float(a.max()), 3), "runs": args.runs}}))


if __name__ == "__main__":
    main()
