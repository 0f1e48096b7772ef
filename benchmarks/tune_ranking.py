"""Compare ranking variants on the eval sets without re-embedding anything.

Uses the cached eval indexes and query vectors that `kb eval` leaves under index/eval/
(run `kb eval DATASET` once per set first). Each variant replaces fields of the searcher's
RankingConfig (fusion, weights, rrf_k, lexical_full_terms, pool_min) and reports MRR@10 /
hit@1 of the hybrid mode, with dense and lexical alone as reference points. Prints one JSON object as its last line.

    python benchmarks/tune_ranking.py ../shared/eval/drcd_test ../shared/eval/cmrc2018_trial \
        --variant '{"fusion": "rrf", "rrf_k": 60}' --variant '{"fusion": "convex"}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from kb.eval.evaluate import QueryVectors, _passage_metrics, eval_cache, load_dataset, prepare_index, run_mode
from kb.eval.learn import SEED, article_of, in_train
from kb.search.searcher import Searcher
from kb.split.passages import DEFAULT_MAX_CHARS


def load(dataset: str):
    ds = load_dataset(dataset)
    cache = eval_cache(ds)
    index_dir, path_to_id, _ = prepare_index(ds, cache, None, DEFAULT_MAX_CHARS, progress=False)
    searcher = Searcher.load(index_dir)
    searcher.warm()
    return ds, searcher, path_to_id, QueryVectors(searcher, cache / "queries.npz")


def score(ds, searcher, path_to_id, qvecs, mode: str) -> dict:
    results, latencies = run_mode(searcher, ds.queries, mode, qvecs, 30, progress=False)
    m = _passage_metrics(ds, results, path_to_id)
    return {"mrr@10": m["mrr@10"], "hit@1": m["hit@1"], "hit@10": m["hit@10"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--variant", action="append", default=[],
                    help='JSON object of RankingConfig fields, plus "bm25": {"k1": .., "b": ..}')
    ap.add_argument("--limit", type=int, default=0, help="only the first N queries of each set")
    ap.add_argument("--held-out", nargs="?", const=SEED, default=None, metavar="SEED",
                    help="only the questions kb.learn holds out (articles on the 30 %% side of its split)")
    args = ap.parse_args()
    variants = [json.loads(v) for v in args.variant] or [{}]
    out: dict = {}
    for d in args.datasets:
        ds, searcher, path_to_id, qvecs = load(d)
        if args.held_out:
            titles = ds.titles()
            ds.queries = [q for q in ds.queries if not in_train(article_of(q, titles), args.held_out)]
        if args.limit:
            ds.queries = ds.queries[: args.limit]
        base = searcher.config
        row = {"dense": score(ds, searcher, path_to_id, qvecs, "dense"),
               "lexical": score(ds, searcher, path_to_id, qvecs, "lexical")}
        for v in variants:
            fields = {k: val for k, val in v.items() if k != "bm25"}
            if v.get("bm25"):  # {"k1": .., "b": ..}: BM25 is computed at query time from raw postings
                fields.update(bm25_k1=v["bm25"].get("k1", base.bm25_k1), bm25_b=v["bm25"].get("b", base.bm25_b))
            searcher.config = dataclasses.replace(base, **fields)
            row["hybrid " + json.dumps(v, ensure_ascii=False)] = score(ds, searcher, path_to_id, qvecs, "hybrid")
            print(ds.name, v, row["hybrid " + json.dumps(v, ensure_ascii=False)], file=sys.stderr)
        qvecs.save()
        row["questions"] = len(ds.queries)
        out[ds.name] = row
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
