"""Server time of one search for very long queries: bounded (kb's rule, the first 512
characters) against unbounded (the whole text tokenised and embedded, as before the
bound), on the sample corpus with the default model.

    python benchmarks/long_query.py --lengths 100 10000 40000 100000

Prints one JSON object as its last line: seconds per search, by length and variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kb.search.searcher as search  # noqa: E402
from kb.index import update_index  # noqa: E402


def timed(searcher, query: str) -> float:
    t0 = time.perf_counter()
    searcher.search(query, k=10)
    return round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 10_000, 40_000, 100_000])
    ap.add_argument("--unbounded-max", type=int, default=40_000,
                    help="Longest query also timed without the bound (it takes about a second per 1,000 chars).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        shutil.copytree(ROOT / "corpus", corpus)
        update_index(corpus, Path(tmp) / "index", progress=False, warn=lambda m: None)
        searcher = search.Searcher.load(Path(tmp) / "index")
        searcher.warm()
        base = (ROOT / "corpus").glob("*.txt").__next__().read_text(encoding="utf-8").replace("\n", "")
        out: dict[str, dict[str, float]] = {"bounded": {}, "unbounded": {}}
        for n in args.lengths:
            start = (len(out["bounded"]) * 997) % len(base)  # each length starts elsewhere: no cached vector
            query = (base[start:] + base * (n // len(base) + 1))[:n]
            out["bounded"][str(n)] = timed(searcher, query)
            if n <= args.unbounded_max:
                limit = search.MAX_QUERY_CHARS
                search.MAX_QUERY_CHARS = 10**9  # the bound off: what a query cost before it
                original = search.bound_query.__defaults__
                search.bound_query.__defaults__ = (10**9,)
                try:
                    out["unbounded"][str(n)] = timed(searcher, query + "。")  # not the cached query vector
                finally:
                    search.MAX_QUERY_CHARS = limit
                    search.bound_query.__defaults__ = original
            print(f"{n}: {out['bounded'][str(n)]} s bounded, {out['unbounded'].get(str(n))} s unbounded",
                  file=sys.stderr)
    print(json.dumps({"seconds_per_search": out, "max_query_chars": search.MAX_QUERY_CHARS}))


if __name__ == "__main__":
    main()
