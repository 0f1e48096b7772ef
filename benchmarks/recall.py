"""Recall@10 of the approximate vector index (HNSW, as kb builds it above
vectors.EXACT_LIMIT) against exact search.

    python benchmarks/recall.py [--synthetic 100000]

Real embeddings: every passage vector of the eval indexes under index/eval/ (built by
`kb eval`, default model) pooled together, queried with the eval questions' vectors.
Optionally also random unit vectors (the worst case for a graph index). Prints one JSON
object as its last line: {"real": {"vectors", "queries", "recall@10", ...}, "synthetic": {...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from kb.errors import KBError
from kb.search.searcher import Searcher
from kb.store.local.vectors import VectorIndex

ROOT = Path(__file__).resolve().parent.parent


def recall_at_10(base: np.ndarray, queries: np.ndarray) -> dict:
    exact = VectorIndex.build(base, base.shape[1], kind="flat")
    t0 = time.perf_counter()
    approx = VectorIndex.build(base, base.shape[1], kind="hnsw")
    build_s = time.perf_counter() - t0
    hits = 0
    for q in queries:
        truth = set(exact.search(q, 10)[0].tolist())
        hits += len(truth & set(approx.search(q, 10)[0].tolist()))
    return {"vectors": int(len(base)), "queries": int(len(queries)), "recall@10": round(hits / (10 * len(queries)), 4),
            "hnsw_build_s": round(build_s, 2), "ef_search": int(approx.index.hnsw.efSearch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=0, help="also random unit vectors of this count")
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    out: dict = {}
    vecs, queries = [], []
    for cache in sorted((ROOT / "index" / "eval").glob("*")):
        try:
            s = Searcher.load(cache / "index")
        except KBError:  # none yet, or an older format (`kb eval` migrates it)
            continue
        vecs += [seg.vectors.all_vectors() for seg in s.snapshot.segments]
        if (cache / "queries.npz").exists():
            queries.append(np.load(cache / "queries.npz")["vectors"])
    if vecs and queries:
        base = np.vstack(vecs)
        q = np.vstack(queries)[: args.queries]
        out["real"] = recall_at_10(base, q)
        print("real", out["real"], file=sys.stderr)
    else:
        print("no eval indexes under index/eval/: run `kb eval ../shared/eval/<set>` first", file=sys.stderr)
    if args.synthetic:
        rng = np.random.default_rng(0)
        base = rng.standard_normal((args.synthetic, 384), dtype=np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        q = rng.standard_normal((min(args.queries, 500), 384), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        out["synthetic"] = recall_at_10(base, q)
        print("synthetic", out["synthetic"], file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
