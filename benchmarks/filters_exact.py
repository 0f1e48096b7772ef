"""Filters are exact (issue 28): on a library of thousands of notices with varied fields,
a filtered search's top 10 is the unfiltered ranking restricted to the documents the filter
allows, for random filter combinations, in every mode, on the local store and Milvus Lite.

    python benchmarks/filters_exact.py [--docs 2000] [--combos 50] [--no-milvus]

Prints one JSON object. Per mode: how many combinations' top 10 equal the restricted unfiltered
ranking (ids and scores), how many returned a document the filter does not allow (must be 0),
and, where the filter allowed nothing, whether the result was empty.

What "the unfiltered ranking" means per mode: lexical and dense scores are a passage's own
(BM25 with the whole library's statistics, calibrated cosine), so the restricted ranking is the
full unfiltered ranking with the other documents taken out. The weighted-sum hybrid ("convex")
fuses those two scores and is compared the same way. The learned hybrid also sees where each
passage ranks among the candidates: under a filter those are the allowed passages, so its
figure compares each channel's filtered candidate run with the unfiltered run restricted (the
input the fusion gets), and reports how often the fused top 10 is also the restricted one.
The embedder is the hash embedder: this measures the stores, not a model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.embed.embedders import HashEmbedder  # noqa: E402
from kb.index import update_index  # noqa: E402
from kb.search.searcher import Searcher  # noqa: E402
from tests.notices import SUBJECTS, allowed_documents, channel_runs_exact, random_filters, write_notices  # noqa: E402

SOURCES = ["人社局", "财政局", "医保局", "教育局", "卫健委", "住建局", "税务局", "统计局", "民政局", "交通局"]
MODES = ("lexical", "dense", "hybrid-convex", "hybrid")


def _key(hits) -> list[tuple[str, float]]:
    return [(h.id, round(h.score, 5)) for h in hits]


def _ids(hits) -> list[str]:
    return [h.id for h in hits]


class Ranker:
    """One searcher per mode, and each query's full unfiltered ranking (asked once)."""

    def __init__(self, index: str) -> None:
        emb = HashEmbedder(64)
        self.plain = Searcher.load(index, embedder=emb)
        self.convex = Searcher.load(index, embedder=emb)
        self.convex.config = replace(self.convex.config, fusion="convex")
        self._full: dict[tuple[str, str], list] = {}

    def searcher(self, mode: str) -> tuple[Searcher, str]:
        return (self.convex, "hybrid") if mode == "hybrid-convex" else (self.plain, mode)

    def search(self, q: str, mode: str, f=None, k: int = 10):
        s, m = self.searcher(mode)
        return s.search(q, k=k, mode=m, filters=f)

    def full(self, q: str, mode: str) -> list:
        if (q, mode) not in self._full:
            self._full[(q, mode)] = self.search(q, mode, k=self.plain.count)
        return self._full[(q, mode)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--combos", type=int, default=50)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-milvus", action="store_true", help="the local store only")
    args = ap.parse_args()

    out: dict = {"docs": args.docs, "combos": args.combos}
    with tempfile.TemporaryDirectory() as tmp:
        docs = write_notices(Path(tmp) / "docs", args.docs, sources=SOURCES, seed=args.seed)
        t0 = time.perf_counter()
        update_index(docs, Path(tmp) / "index", embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
        out["index_s"] = round(time.perf_counter() - t0, 1)
        local = Ranker(str(Path(tmp) / "index"))
        out["passages"] = local.plain.count
        rng = random.Random(args.seed)
        combos = [(random_filters(rng, SOURCES), rng.choice(SUBJECTS) + rng.choice(["", "的办理时限", "工作"]))
                  for _ in range(args.combos)]
        allowed = [allowed_documents(local.plain.docs, f) for f, _ in combos]
        sizes = sorted(map(len, allowed))
        out["allowed_documents"] = {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1],
                                    "empty": sizes.count(0)}

        results: dict[str, dict] = {}
        got_local: dict[tuple[int, str], list] = {}
        for mode in MODES:
            equal = same_order = outside = empty_ok = runs_equal = 0
            overlap: list[float] = []
            for i, ((f, q), ok) in enumerate(zip(combos, allowed)):
                got = local.search(q, mode, f)
                got_local[(i, mode)] = _key(got)
                outside += any(h.doc_id not in ok for h in got)
                if not ok:
                    empty_ok += got == []
                restricted = [h for h in local.full(q, mode) if h.doc_id in ok][:10]
                equal += _key(got) == _key(restricted)
                same_order += _ids(got) == _ids(restricted)
                if restricted:
                    overlap.append(len({h.id for h in got} & {h.id for h in restricted}) / len(restricted))
                if mode == "hybrid":
                    runs_equal += channel_runs_exact(local.plain, q, f, ok)
            results[mode] = {"top10_equals_restricted": equal, "hits_outside_filter": outside,
                             "empty_filter_gave_nothing": f"{empty_ok}/{sum(not a for a in allowed)}"}
            if mode == "hybrid":
                queries = sorted({q for _, q in combos})
                results[mode].update({
                    "top10_order_equals_restricted": same_order,
                    "channel_runs_equal_restricted": runs_equal,
                    "mean_overlap_at_10": round(sum(overlap) / max(1, len(overlap)), 3),
                    # the learned ranking depends on the candidate pool even without a filter:
                    "unfiltered_top10_order_equals_full_depth":
                        f"{sum(_ids(local.search(q, mode)) == _ids(local.full(q, mode)[:10]) for q in queries)}"
                        f"/{len(queries)} queries"})
        out["local"] = results

        if not args.no_milvus:
            from kb.store.milvus.library import release

            db = str(Path(tmp) / "kb.db")
            t0 = time.perf_counter()
            update_index(docs, db, embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
            out["milvus_index_s"] = round(time.perf_counter() - t0, 1)
            try:
                milvus = Ranker(db)
                same = {mode: sum(_key(milvus.search(q, mode, f)) == got_local[(i, mode)]
                                  for i, (f, q) in enumerate(combos)) for mode in MODES}
                out["milvus_top10_equals_local"] = same
            finally:
                release(db)
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
