"""Do the scores kb shows mean what they say, on several kinds of library?

    python benchmarks/calibration.py [--fit kb/data/shown.json]

For each library — the three shared sets (their `kb eval` caches, built by `kb eval SET`), the
sample corpus with the seed questions, and the real-documents library of benchmarks/manuals.py with
its questions (indexed by `kb eval benchmarks/manuals_questions --corpus DIR`) — the shown score
(相关度) of each hit against whether it is right: for the shared sets, a hit from a positive passage
(the top 10); for the expect-style sets, the top hit holding the expected phrase (top 1 only, the
other hits' truth is unknown). Reports the expected calibration error (10 equal-width bins), the
share of answered questions flagged "没有足够相关的段落" (low confidence), and the share flagged of
off-topic questions (another library's questions asked here). Prints one JSON line: each library
with the model's own probability shown (``model``) and with the shown score of kb.rank.shown
(``shown``).

``--fit kb/data/shown.json`` (``make shown-score``) first fits that shown score's calibration on
these libraries — the model's logits of each question's hits and whether each is right, every
library weighing the same, off-topic questions (all hits wrong) half as much — writes it, and
reports, beside the in-sample figures, each library's error when it is left out of the fit.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.eval.evaluate import eval_cache, load_dataset  # noqa: E402
from kb.eval.learn import fit_shown  # noqa: E402
from kb.rank.fusion import load_model  # noqa: E402
from kb.rank.shown import ShownCalibration, logit, shown_calibration  # noqa: E402
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


def judged(searcher: Searcher, questions: list[dict], truth, off_topic: list[str], top: int) -> tuple[list, list]:
    """The model's logits of each question's hits (best first) and whether each is right (None:
    not judged); then the same of the off-topic questions, every hit wrong."""
    answered = []
    for q in questions:
        hits = search_response(searcher, q["question"], k=10).hits
        answered.append(([logit(h.score) for h in hits], [truth(q, h) if i < top else None
                                                          for i, h in enumerate(hits)]))
    off = []
    for q in off_topic:
        hits = search_response(searcher, q, k=10).hits
        off.append(([logit(h.score) for h in hits], [False] * len(hits)))
    return answered, off


def libraries(questions: int, rng: random.Random) -> dict[str, tuple[Searcher, list[dict], object, int]]:
    out: dict[str, tuple[Searcher, list[dict], object, int]] = {}
    for name in ("cmrc2018_trial", "drcd_test", "dureader2_demo_train"):
        ds = load_dataset(SHARED / name)
        cache = eval_cache(ds)
        if not (cache / "index").exists():
            print(f"skipped {name}: run kb eval {SHARED / name} first", file=sys.stderr)
            continue
        ids = json.loads((cache / "ids.json").read_text(encoding="utf-8"))
        qs = [q for q in ds.queries if q["question"].strip()]
        qs = rng.sample(qs, min(questions, len(qs)))
        out[name] = (Searcher.load(cache / "index"), qs,
                     lambda q, h, ids=ids: ids.get(h.path) in {str(p) for p in q.get("positives", [])}, 10)
    expect = lambda q, h: _unspaced(q["expect"]) in _unspaced(h.text)  # noqa: E731
    seed = load_dataset(SHARED / "seed_dev")
    sample = ROOT / "index/eval/seed_dev-corpus/index"
    if sample.exists():
        out["sample"] = (Searcher.load(sample), list(seed.queries), expect, 1)
    else:
        print("skipped sample: run kb eval ../shared/eval/seed_dev --corpus corpus first", file=sys.stderr)
    manuals = ROOT / "index/eval/manuals_questions-corpus/index"
    if manuals.exists():
        mq = load_dataset(ROOT / "benchmarks" / "manuals_questions")
        out["manuals"] = (Searcher.load(manuals), list(mq.queries), expect, 1)
    else:
        print("skipped manuals: run kb eval benchmarks/manuals_questions --corpus DIR first", file=sys.stderr)
    return out


def showing(searcher: Searcher, shown: bool) -> Searcher:
    searcher.config = replace(searcher.config, shown=shown)
    return searcher


def fit(libs: dict, off_topic: dict[str, list[str]], out: Path) -> dict:
    """Fit the shown score's calibration on every library (and leaving each out), write ``out``."""
    data: dict[str, list] = {}
    weights: dict[str, float] = {}
    for name, (searcher, qs, truth, top) in libs.items():
        data[name], data[name + ":off"] = judged(showing(searcher, False), qs, truth, off_topic[name], top)
        weights[name], weights[name + ":off"] = 1.0, OFF_TOPIC_WEIGHT
    a, g, b = fit_shown(data, weights)
    left_out = {}
    for name in libs:
        rest = {n: rows for n, rows in data.items() if n.split(":")[0] != name}
        cal = ShownCalibration(*fit_shown(rest, weights), model="")
        left_out[name] = ece([(p, y) for logits, ys in data[name] for p, y in zip(cal.scores(logits), ys)
                              if y is not None])
    model = load_model()
    info = {"fitted_on": {n: len(rows) for n, rows in data.items()}, "ece_left_out": left_out,
            "command": "make shown-score"}
    out.write_text(json.dumps(ShownCalibration(a, g, b, model.fingerprint).to_json(info), ensure_ascii=False,
                              indent=1) + "\n", encoding="utf-8")
    shown_calibration.cache_clear()
    return {"a": round(a, 4), "g": round(g, 4), "b": round(b, 4), "ece_left_out": left_out}


OFF_TOPIC_WEIGHT = 0.5  # the off-topic questions of a library weigh half as much as its answered ones


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=300, help="at most this many questions a set")
    ap.add_argument("--fit", type=Path, default=None, metavar="OUT", help="fit the shown score first, write OUT")
    args = ap.parse_args()
    rng = random.Random(7)
    libs = libraries(args.questions, rng)
    names = list(libs)
    off_topic = {}
    for name in names:
        others = [q["question"] for other in names if other != name for q in libs[other][1]]
        off_topic[name] = rng.sample(others, min(100, len(others)))
    result: dict = {}
    if args.fit:
        result["fit"] = fit(libs, off_topic, args.fit)
        print("fit", result["fit"], file=sys.stderr)
    for shown in (False, True):
        key = "shown" if shown else "model"
        result[key] = {}
        for name, (searcher, qs, truth, top) in libs.items():
            result[key][name] = measure(showing(searcher, shown), qs, truth, off_topic[name], top)
            print(key, name, result[key][name], file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
