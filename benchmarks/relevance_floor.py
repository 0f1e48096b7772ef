"""The relevance floor: how often kb says "nothing matches well" for questions that have
no answer in the index, and for questions that do.

Unanswerable questions are borrowed from other sets, never written to pass: each shared
set's questions asked of the sample corpus, and the sample-corpus questions asked of each
shared set's index. Answerable ones are each set's own questions against its own index.

    python benchmarks/relevance_floor.py                      # rates at the shipped floor
    python benchmarks/relevance_floor.py --sweep              # rates over a range of floors
    python benchmarks/relevance_floor.py --dump features.jsonl

Prints one JSON object as its last line. Indexes are the `kb eval` caches under
index/eval/ (built on first use with the default model, which takes minutes per set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.eval.evaluate import QueryVectors, dataset_hash, load_dataset, prepare_index  # noqa: E402
from kb.index import update_index  # noqa: E402
from kb.search.searcher import DENSE_FLOOR, SUPPORT_FLOOR, Searcher, confidence  # noqa: E402
from kb.split.passages import DEFAULT_MAX_CHARS  # noqa: E402

SETS = ("cmrc2018_trial", "drcd_test", "dureader2_demo_train")


def open_sets(eval_dir: Path, corpus: Path, limit: int, names=SETS):
    """{name: (searcher, questions)} for the sample corpus and each shared set."""
    out = {}
    sample_dir = ROOT / "index" / "eval" / "floor-sample"
    update_index(corpus, sample_dir, progress=False, warn=lambda m: None)
    seed = [q["question"] for q in load_dataset(eval_dir / "seed_dev").queries]
    out["sample"] = (Searcher.load(sample_dir), seed, None)
    for name in names:
        if not (eval_dir / name).is_dir():
            continue
        ds = load_dataset(eval_dir / name)
        cache = ROOT / "index" / "eval" / f"{ds.name}-{dataset_hash(ds, None, DEFAULT_MAX_CHARS)}"
        index_dir, _, _ = prepare_index(ds, cache, None, DEFAULT_MAX_CHARS, progress=sys.stderr.isatty())
        questions = [q["question"] for q in ds.queries if q["question"].strip()][:limit]
        out[name] = (Searcher.load(index_dir), questions, cache / "queries.npz")
    return out


def top_features(searcher: Searcher, question: str) -> dict:
    hits = searcher.search(question, k=10)
    h = hits[0] if hits else None
    return {
        "confidence": confidence(hits),
        "score": h.score if h else 0.0,
        "support": max((x.support for x in hits), default=0.0),
        "dense": max((x.scores["dense"] for x in hits), default=0.0),
        "lexical": h.scores["lexical"] if h else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval"))
    ap.add_argument("--corpus", default=str(ROOT / "corpus"))
    ap.add_argument("--limit", type=int, default=400, help="Questions per set (default 400).")
    ap.add_argument("--sweep", action="store_true", help="Rates for floors 0.20-0.60.")
    ap.add_argument("--dump", help="Write every question's top-hit features to this JSONL file.")
    ap.add_argument("--sets", nargs="+", default=list(SETS), help="Shared sets to use (default: all three).")
    args = ap.parse_args()

    sets = open_sets(Path(args.eval_dir), Path(args.corpus), args.limit, args.sets)
    vectors: dict[str, np.ndarray] = {}
    for _, (searcher, questions, qcache) in sets.items():  # query vectors do not depend on the index
        qv = QueryVectors(searcher, qcache)
        for q in questions:
            vectors[q] = qv.get(q)[0]
        qv.save()

    rows = []
    for index_name, (searcher, _, _) in sets.items():
        for question_set, (_, questions, _) in sets.items():
            if index_name != question_set and "sample" not in (index_name, question_set):
                continue  # two encyclopaedias may well answer each other's questions
            answerable = index_name == question_set
            for q in questions:
                searcher.prime_query(q, vectors[q])
                rows.append({"index": index_name, "questions": question_set, "answerable": answerable,
                             "question": q, **top_features(searcher, q)})
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def rates(flag) -> dict:
        out = {}
        for answerable in (True, False):
            group = [r for r in rows if r["answerable"] == answerable]
            pairs = sorted({(r["questions"], r["index"]) for r in group})
            per = {f"{qs}->{ix}": round(float(np.mean([flag(r) for r in group
                                                         if (r["questions"], r["index"]) == (qs, ix)])), 4)
                   for qs, ix in pairs}
            # pooled over all questions, and as the mean of the pairings (each weighs the same)
            out["answerable" if answerable else "unanswerable"] = {
                "flagged_pooled": round(float(np.mean([flag(r) for r in group])), 4),
                "flagged_mean_of_pairs": round(float(np.mean(list(per.values()))), 4), "by_pair": per,
                "questions": len(group)}
        return out

    result = {"support_floor": SUPPORT_FLOOR, "dense_floor": DENSE_FLOOR,
              "rates": rates(lambda r: r["confidence"] == "low")}
    if args.sweep:
        result["sweep"] = {}
        for sf in np.arange(0.25, 0.56, 0.05):
            for df in np.arange(0.2, 0.51, 0.05):
                r = rates(lambda r, a=sf, b=df: r["support"] < a and r["dense"] < b)
                result["sweep"][f"support<{sf:.2f} and dense<{df:.2f}"] = {
                    "answerable_flagged": r["answerable"]["flagged_pooled"],
                    "unanswerable_flagged": r["unanswerable"]["flagged_pooled"]}
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
