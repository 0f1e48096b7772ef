"""The local store and Milvus Lite on the same synthetic library: build time, hybrid query
p50 (embedding excluded), add-one-document and delete-one-document times, and the BM25
drift after adding 10% more documents (top-10 overlap with the local store, before and
after `kb compact`). Prints JSON.

    python benchmarks/milvus.py --passages 100000

Documents are sentences of the sample corpus and the shared eval sets recombined at
random (20 paragraphs each); vectors come from the hash embedder (384-d), so no model time
is spent and both stores hold the same vectors. The 10% added later have paragraphs twice
as long, to move the average passage length (what the frozen BM25 weights drift with).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import synthetic  # noqa: E402
from kb import milvus  # noqa: E402
from kb.embed.embedders import HashEmbedder  # noqa: E402
from kb.index import compact_index, update_index  # noqa: E402
from kb.search.searcher import Searcher  # noqa: E402

DIM = 384


def write_docs(folder: Path, start: int, n_docs: int, pool: list[str], seed: int, sentences=(1, 4)) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(start, start + n_docs):
        paras = ["".join(rng.choice(pool) for _ in range(rng.randint(*sentences))) for _ in range(20)]
        (folder / f"doc{d:06d}.txt").write_text(f"合成文档{d}\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")


def quiet(_m: str) -> None:
    pass


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, round(time.perf_counter() - t, 3)


def p50(searcher: Searcher, questions: list[str], mode: str = "hybrid") -> float:
    for q in questions:  # embeddings computed before timing: the query side is the same for both stores
        searcher.prime_query(q, searcher.embedder.embed_query(q))
    times = []
    for q in questions:
        t = time.perf_counter()
        searcher.search(q, k=10, mode=mode)
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def overlap(a: Searcher, b: Searcher, questions: list[str]) -> float:
    vals = []
    for q in questions:
        x, y = {h.id for h in a.search(q, k=10)}, {h.id for h in b.search(q, k=10)}
        vals.append(len(x & y) / max(1, max(len(x), len(y))))
    return round(statistics.mean(vals), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="kb-milvus-"))
    corpus, local, store = work / "docs", work / "index", str(work / "kb.db")
    pool = synthetic.sentence_pool()
    questions = synthetic.questions(args.questions, seed=1)
    # 20 paragraphs each; short ones are packed together: about 15.5 passages per document
    n_docs = max(1, round(args.passages / 15.5))
    write_docs(corpus, 0, n_docs, pool, seed=0)
    emb = HashEmbedder(DIM)
    out: dict = {"passages_requested": args.passages, "documents": n_docs}

    r, out["local_build_s"] = timed(update_index, corpus, local, embedder=emb, progress=False, warn=quiet)
    out["passages"] = r.passages
    r, out["lite_build_s"] = timed(update_index, corpus, store, embedder=emb, progress=False, warn=quiet,
                                   reuse_vectors=local)
    out["lite_build_embedded"] = r.embedded
    loc, lite = Searcher.load(local, embedder=emb), Searcher.load(store, embedder=emb)
    p50(loc, questions[:10])
    p50(lite, questions[:10])  # warm both
    out["query_p50_ms"] = {"local": p50(loc, questions), "lite": p50(lite, questions)}
    out["query_p50_ms"]["lite_over_local"] = round(out["query_p50_ms"]["lite"] / out["query_p50_ms"]["local"], 1)
    out["query_p50_ms_by_mode_lite"] = {m: p50(lite, questions[:30], m) for m in ("dense", "lexical")}

    # one document in, one out (the store's client stays open: a page or API process)
    write_docs(corpus, n_docs, 1, pool, seed=99)
    out["add_one_document_s"] = {"local": timed(update_index, corpus, local, embedder=emb, progress=False,
                                                 warn=quiet)[1],
                                 "lite": timed(update_index, corpus, store, embedder=emb, progress=False,
                                               warn=quiet)[1]}
    (corpus / f"doc{n_docs:06d}.txt").unlink()
    out["delete_one_document_s"] = {"local": timed(update_index, corpus, local, embedder=emb, progress=False,
                                                    warn=quiet)[1],
                                    "lite": timed(update_index, corpus, store, embedder=emb, progress=False,
                                                  warn=quiet)[1]}
    lite.close()
    milvus.release(store)
    # the same add from a cold process start of the embedded engine (what `kb index --store x.db` pays)
    write_docs(corpus, n_docs, 1, pool, seed=98)
    update_index(corpus, local, embedder=emb, progress=False, warn=quiet)
    out["add_one_document_cold_lite_s"] = timed(update_index, corpus, store, embedder=emb, progress=False,
                                                warn=quiet)[1]

    loc, lite = Searcher.load(local, embedder=emb), Searcher.load(store, embedder=emb)
    first_avgdl = round(lite.manifest["total_length"] / lite.manifest["passages"], 2)
    out["top10_overlap"] = {"start": overlap(loc, lite, questions)}
    write_docs(corpus, n_docs + 1, max(1, n_docs // 10), pool, seed=7, sentences=(3, 8))  # +10%, longer
    update_index(corpus, local, embedder=emb, progress=False, warn=quiet)
    update_index(corpus, store, embedder=emb, progress=False, warn=quiet)
    loc, lite = Searcher.load(local, embedder=emb), Searcher.load(store, embedder=emb)
    out["top10_overlap"]["after_adding_10pct_longer"] = overlap(loc, lite, questions)
    m = lite.manifest
    out["bm25_average_length"] = {"first_build": first_avgdl, "now": round(m["total_length"] / m["passages"], 2)}
    lite.close()
    _, out["compact_s"] = timed(compact_index, store)
    lite = Searcher.load(store, embedder=emb)
    out["top10_overlap"]["after_compact"] = overlap(loc, lite, questions)
    lite.close()
    milvus.release(store)
    out["lite_size_mb"] = round(sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file()) / 2**20, 1)
    out["local_size_mb"] = round(sum(f.stat().st_size for f in local.rglob("*") if f.is_file()) / 2**20, 1)
    print(json.dumps(out, ensure_ascii=False, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
