"""Do the scores kb shows mean what they say, on several kinds of library?

    python benchmarks/calibration.py [--manuals /tmp/manuals]

For each library — the three shared sets (their `kb eval` caches, built by `kb eval SET`), the
sample corpus with the seed questions, and the real-documents library of benchmarks/manuals.py with
its questions (indexed by `kb eval benchmarks/manuals_questions --corpus DIR`) — the shown score
(相关度) of each hit against whether it is right: for the shared sets, a hit from a positive passage
(the top 10); for the expect-style sets, the top hit holding the expected phrase (top 1 only, the
other hits' truth is unknown). Reports the expected calibration error (10 equal-width bins), the
share of answered questions flagged "没有足够相关的段落" (low confidence), and the share flagged of
off-topic questions (another library's questions asked here). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.eval.evaluate import eval_cache, load_dataset  # noqa: E402
from kb.search.searcher import Searcher, search_response  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval"
BINS = 10


def ece(pairs: list[tuple[float, bool]]) -> float | None:
    if not pairs:
        return None
    total, err = len(pairs), 0.0
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        inside = [(s, y) for s, y in pairs if lo <= s < hi or (b == BINS - 1 and s == 1.0)]
        if inside:
            conf = sum(s for s, _ in inside) / len(inside)
            acc = sum(y for _, y in inside) / len(inside)
            err += len(inside) / total * abs(conf - acc)
    return round(err, 4)


def _unspaced(text: str) -> str:
    return "".join(text.split())


def measure(searcher: Searcher, questions: list[dict], truth, off_topic: list[str], top: int) -> dict:
    pairs: list[tuple[float, bool]] = []
    flagged = 0
    for q in questions:
        r = search_response(searcher, q["question"], k=10)
        flagged += bool(r.low_confidence)
        for h in r.hits[:top]:
            pairs.append((h.score, truth(q, h)))
    off = sum(bool(search_response(searcher, q, k=10).low_confidence) for q in off_topic)
    right = [s for s, y in pairs if y]
    return {"questions": len(questions), "ece": ece(pairs), "hits_judged": len(pairs),
            "mean_score_right": round(sum(right) / len(right), 3) if right else None,
            "flagged_answered": round(flagged / max(len(questions), 1), 3),
            "flagged_off_topic": round(off / max(len(off_topic), 1), 3) if off_topic else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manuals", type=Path, default=None, help="the library benchmarks/manuals.py built")
    ap.add_argument("--questions", type=int, default=300, help="at most this many questions a set")
    args = ap.parse_args()
    rng = random.Random(7)
    libraries: dict[str, tuple[Searcher, list[dict], object, int]] = {}
    for name in ("cmrc2018_trial", "drcd_test", "dureader2_demo_train"):
        ds = load_dataset(SHARED / name)
        cache = eval_cache(ds)
        if not (cache / "index").exists():
            print(f"skipped {name}: run kb eval {SHARED / name} first", file=sys.stderr)
            continue
        ids = json.loads((cache / "ids.json").read_text(encoding="utf-8"))
        qs = [q for q in ds.queries if q["question"].strip()]
        qs = rng.sample(qs, min(args.questions, len(qs)))
        libraries[name] = (Searcher.load(cache / "index"), qs,
                           lambda q, h, ids=ids: ids.get(h.path) in {str(p) for p in q.get("positives", [])}, 10)
    expect = lambda q, h: _unspaced(q["expect"]) in _unspaced(h.text)  # noqa: E731
    seed = load_dataset(SHARED / "seed_dev")
    sample = Path("index/eval/seed_dev-corpus/index")
    if sample.exists():
        libraries["sample"] = (Searcher.load(sample), list(seed.queries), expect, 1)
    manuals = Path("index/eval/manuals_questions-corpus/index")
    if manuals.exists():
        mq = load_dataset(ROOT / "benchmarks" / "manuals_questions")
        libraries["manuals"] = (Searcher.load(manuals), list(mq.queries), expect, 1)
    names = list(libraries)
    out = {}
    for name, (searcher, qs, truth, top) in libraries.items():
        others = [q["question"] for other in names if other != name for q in libraries[other][1]]
        off = rng.sample(others, min(50, len(others)))
        out[name] = measure(searcher, qs, truth, off, top)
        print(name, out[name], file=sys.stderr)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
