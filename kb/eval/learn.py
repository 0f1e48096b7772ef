"""Train the learned fusion (``kb/data/fusion.json``) on judged questions.

Data: question sets in ``kb eval``'s format (``passages.jsonl`` + ``queries.jsonl`` with
``positives``). Every question is asked of its set's index as ``kb eval`` asks it (the
same candidates, 30 hits deep), each candidate described by :data:`kb.rank.fusion.FEATURES`
and labelled by whether its passage is a positive. The model is linear and trained
listwise: for each question, the softmax over its candidates should put its weight on the
positives (L2-regularised, fitted by L-BFGS, deterministic). A logistic calibration on top
turns scores into 0-1.

Questions are split by article (the title of a question's first positive passage), 70/30
by a hash with a fixed seed, so that no article has questions on both sides; the report
gives the held-out MRR@10 of today's convex fusion and of the model fitted on the 70 %.
The shipped file is then fitted on every question.

    python -m kb.learn ../shared/eval/cmrc2018_trial ../shared/eval/drcd_test \\
        ../shared/eval/dureader2_demo_train --out kb/data/fusion.json

Prints one JSON object (the report) as its last line. Retrain on your own judged questions
the same way, and point ``RankingConfig.model`` (or ``KB_FUSION_MODEL``) at the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import KBError
from kb.eval.evaluate import first_occurrences, hit_at, mrr_at
from kb.rank.fusion import ABSENT_RANK, FEATURES, FusionModel, features, load_model

SEED = "kb-fusion-1"
TRAIN_SHARE = 0.7
L2 = 1e-2
# The features of the shipped model, chosen by leave-one-set-out (benchmarks/fusion_loso.py) among
# the candidates that keep kb's behaviour (an exact identifier first, both stores ranking alike):
# the two channels, their ranks and word cover, without what describes a source's layout (documents'
# lengths and paragraph counts, sub-points), which fitted the shared sets' one-paragraph documents
# and did not carry to web pages. (The within-query standardised and agreement-gated channels did
# better still on that table but let a dense neighbour outrank an asked code, and made Milvus and
# the local store rank apart: FEATURES keeps them as candidates.)
MODEL_FEATURES = ("dense", "lexical", "lexical_ramped", "dense_x_lexical", "convex", "dense_rank", "lexical_rank",
                  "dense_only", "lexical_only", "cover", "cover_ramped", "head_cover")
DEPTH = 30  # hits per question, as kb eval asks


@dataclass
class Question:
    dataset: str
    key: str  # the article: questions with one key are on one side of the split
    x: np.ndarray  # candidates x features
    y: np.ndarray  # 1.0 for a candidate from a positive passage
    passage: list[str]  # the dataset passage of each candidate
    positives: set[str]


def article_of(query: dict, title_of: dict[str, str]) -> str:
    pos = [str(p) for p in query.get("positives", [])]
    title = title_of.get(pos[0], "") if pos else ""
    return title or str(query.get("id", query["question"]))


def in_train(key: str, seed: str = SEED, share: float = TRAIN_SHARE) -> bool:
    """Which side of the split an article falls on: a hash, so it never depends on order."""
    h = int.from_bytes(hashlib.sha1(f"{seed}\x00{key}".encode()).digest()[:8], "big")
    return h / 2**64 < share


def collect(dataset: str | Path, progress: bool = False, model: str | None = None) -> list[Question]:
    """Every question of a set, with its candidates' features, asked of the set's cached index."""
    from kb.eval.evaluate import QueryVectors, eval_cache, load_dataset, prepare_index
    from kb.progress import progress_bar
    from kb.search.searcher import Searcher
    from kb.split.passages import DEFAULT_MAX_CHARS

    ds = load_dataset(dataset)
    if ds.passages is None:
        raise SystemExit(f"{dataset}: training needs passages.jsonl and queries with positives")
    cache = eval_cache(ds, model)
    index_dir, path_to_id, _ = prepare_index(ds, cache, model, DEFAULT_MAX_CHARS, progress)
    searcher = Searcher.load(index_dir, model=model)
    searcher.warm()
    qvecs = QueryVectors(searcher, cache / "queries.npz")
    title_of = ds.titles()
    path_of = {d["doc_id"]: d["path"] for d in searcher.docs}
    n = max(searcher.config.pool_min, 5 * DEPTH)
    out = []
    bar = progress_bar(progress, len(ds.queries), ds.name, unit="query")
    for q in ds.queries:
        if bar is not None:
            bar.update(1)
        question = q["question"].strip()
        if not question:
            continue
        searcher.prime_query(question, qvecs.get(question)[0])
        tokens = searcher.tokenize(question)
        c = searcher.gather(question, tokens, n)
        if c is None:
            continue
        pool = searcher.pool(tokens, c)
        passage = [path_to_id.get(path_of[c.records[r]["doc_id"]], "") for r in c.rows]
        positives = {str(p) for p in q.get("positives", [])}
        out.append(Question(ds.name, article_of(q, title_of), features(pool, searcher.config),
                            np.array([p in positives for p in passage], dtype=float), passage, positives))
    if bar is not None:
        bar.close()
    qvecs.save()
    return out


# --------------------------------------------------------------------------- fitting


def _stack(questions: Sequence[Question]):
    x = np.vstack([q.x for q in questions])
    seg = np.repeat(np.arange(len(questions)), [len(q.y) for q in questions])
    return x, np.concatenate([q.y for q in questions]), seg


def _minimize():
    """scipy's optimiser, which only learning needs (the ``learn`` extra)."""
    try:
        from scipy.optimize import minimize
    except ImportError as e:
        raise KBError("learning a ranking needs scipy, which is not installed: pip install 'kb[learn]'") from e
    return minimize


def fit(questions: Sequence[Question], l2: float = L2, weights: Sequence[float] | None = None,
        info: dict | None = None, names: Sequence[str] = MODEL_FEATURES) -> FusionModel:
    """The listwise linear model (and its calibration) over the features ``names`` fitted on
    ``questions``; those whose candidates hold no positive teach nothing and are left out."""
    minimize = _minimize()

    keep = [i for i, q in enumerate(questions) if q.y.any()]
    if not keep:
        raise SystemExit("no question finds one of its positives among its candidates: nothing to learn from")
    qs = [questions[i] for i in keep]
    qw = np.ones(len(qs)) if weights is None else np.asarray([weights[i] for i in keep], dtype=float)
    qw = qw / qw.mean()
    x, y, seg = _stack(qs)
    names = tuple(names)
    if names != FEATURES:
        x = x[:, [FEATURES.index(f) for f in names]]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    nq = len(qs)

    def loss(w):
        s = z @ w
        top = np.full(nq, -np.inf)
        np.maximum.at(top, seg, s)
        e = np.exp(s - top[seg])
        all_ = np.bincount(seg, e, nq)
        pos = np.bincount(seg, e * y, nq)
        value = float(np.sum(qw * (np.log(all_) - np.log(pos)))) / nq + l2 * float(w @ w)
        p_all, p_pos = e / all_[seg], e * y / pos[seg]
        grad = ((qw[seg] * (p_all - p_pos)) @ z) / nq + 2 * l2 * w
        return value, grad

    res = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    w = res.x
    raw = z @ w
    calibration = _calibrate(raw, y)
    return FusionModel(names, mean, scale, w, calibration, info or {})


def _calibrate(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of the logistic p(relevant) = 1 / (1 + exp(-(a * raw + b)))."""
    minimize = _minimize()

    def loss(p):
        t = p[0] * raw + p[1]
        value = float(np.mean(np.logaddexp(0, t) - y * t))
        g = 1 / (1 + np.exp(-t)) - y
        return value, np.array([np.mean(g * raw), np.mean(g)])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


Judged = Sequence[tuple[Sequence[float], Sequence[bool | None]]]  # a question's hits: logits, right or not


def fit_shown(libraries: Mapping[str, Judged], weights: Mapping[str, float] | None = None) -> tuple[float, ...]:
    """``(a, g, b)`` of :class:`kb.rank.shown.ShownCalibration`, by maximum likelihood over the
    judged hits of every library (``{name: [(the logits of a question's hits, best first, and
    whether each is right — None: not judged)]}``), each library weighing the same (or its
    ``weights``) however many hits it has."""
    from kb.rank.shown import leads

    t_all, m_all, y_all, w_all = [], [], [], []
    for name, rows in libraries.items():
        judged = sum(y is not None for _, ys in rows for y in ys) / (weights or {}).get(name, 1.0)
        for logits, ys in rows:
            for t, lead, y in zip(logits, leads(list(logits)), ys):
                if y is None:
                    continue
                t_all.append(t)
                m_all.append(lead)
                y_all.append(float(y))
                w_all.append(1.0 / judged)
    x = np.column_stack([t_all, m_all, np.ones(len(t_all))])
    y, w = np.array(y_all), np.array(w_all) / sum(w_all)

    def loss(p):
        z = x @ p
        value = float(w @ (np.logaddexp(0, z) - y * z))
        return value, x.T @ (w * (1 / (1 + np.exp(-z)) - y))

    res = _minimize()(loss, np.array([1.0, 0.0, 0.0]), jac=True, method="L-BFGS-B")
    return tuple(float(v) for v in res.x)


# --------------------------------------------------------------------------- measuring


def mrr(scores: np.ndarray, q: Question, k: int = 10) -> tuple[float, float]:
    """MRR@k and hit@1 of a question when its candidates are ranked by ``scores``
    (ties by position), each dataset passage counted at its best candidate."""
    ranked = first_occurrences([q.passage[i] for i in np.argsort(-scores, kind="stable")])
    return mrr_at(ranked, q.positives, k), hit_at(ranked, q.positives, 1)


CONVEX = FEATURES.index("convex")


def report(questions: Sequence[Question], model: FusionModel | None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in sorted({q.dataset for q in questions}):
        qs = [q for q in questions if q.dataset == name]
        conv = np.array([mrr(q.x[:, CONVEX], q) for q in qs])
        row = {"questions": len(qs), "convex_mrr@10": round(float(conv[:, 0].mean()), 4),
               "convex_hit@1": round(float(conv[:, 1].mean()), 4)}
        if model is not None:
            lrn = np.array([mrr(model.raw(q.x), q) for q in qs])
            row |= {"learned_mrr@10": round(float(lrn[:, 0].mean()), 4),
                    "learned_hit@1": round(float(lrn[:, 1].mean()), 4)}
        out[name] = row
    return out


DENSE, LEXICAL = FEATURES.index("dense"), FEATURES.index("lexical")
DENSE_RANK, LEXICAL_RANK = FEATURES.index("dense_rank"), FEATURES.index("lexical_rank")


def channel_scores(q: Question) -> dict[str, np.ndarray]:
    """Each single-channel and fixed fusion's scores of a question's candidates: dense, lexical, the
    weighted sum (``convex``) and RRF (k = 60, from the candidates' ranks in each channel)."""
    def rrf_part(col: int) -> np.ndarray:
        rank = np.expm1(q.x[:, col])  # the features hold log1p(rank), ABSENT_RANK when not returned
        return np.where(rank < ABSENT_RANK - 0.5, 1.0 / (60.0 + rank), 0.0)
    return {"lexical": q.x[:, LEXICAL], "dense": q.x[:, DENSE], "convex": q.x[:, CONVEX],
            "rrf": rrf_part(DENSE_RANK) + rrf_part(LEXICAL_RANK)}


def _means(rows: list[tuple[float, float]]) -> dict[str, float]:
    a = np.array(rows) if rows else np.zeros((0, 2))
    return {"mrr@10": round(float(a[:, 0].mean()), 4) if len(a) else 0.0,
            "hit@1": round(float(a[:, 1].mean()), 4) if len(a) else 0.0}


def leave_one_out(questions: Sequence[Question], l2: float = L2, shipped: FusionModel | None = None,
                  fitter=None) -> dict[str, dict[str, dict[str, float]]]:
    """The protocol that judges a fusion by sources it never saw: for each set, a model fitted on
    the other sets (``fitter(train) -> FusionModel``, by default :func:`fit` with set weights)
    ranks that set's candidates; beside it the set's lexical, dense, weighted-sum, RRF and shipped
    rankings. ``{set: {method: {mrr@10, hit@1}}}``."""
    fitter = fitter or (lambda train: fit(train, l2, set_weights(train)))  # MODEL_FEATURES
    out: dict[str, dict[str, dict[str, float]]] = {}
    names = sorted({q.dataset for q in questions})
    for name in names:
        test = [q for q in questions if q.dataset == name]
        train = [q for q in questions if q.dataset != name]
        rows: dict[str, list[tuple[float, float]]] = {}
        model = fitter(train) if train else None
        for q in test:
            for method, scores in channel_scores(q).items():
                rows.setdefault(method, []).append(mrr(scores, q))
            if shipped is not None:
                rows.setdefault("shipped", []).append(mrr(shipped.raw(q.x), q))
            if model is not None:
                rows.setdefault("left_out", []).append(mrr(model.raw(q.x), q))
        out[name] = {method: _means(r) for method, r in rows.items()} | {"questions": {"n": len(test)}}
    return out


def guard(questions: Sequence[Question], fitter) -> dict:
    """The check a new model passes before it is written: its configuration's mean left-out MRR@10
    (fitted on all sets but one, measured on that one) against the shipped model's configuration
    (its features and L2) under the same protocol, on the same questions. With one set, the two are
    compared on the 70/30 split by article instead."""
    shipped = load_model()
    old_l2 = float(shipped.info.get("l2", L2))

    def old_fitter(train):
        return fit(train, old_l2, set_weights(train), names=shipped.features)

    if len({q.dataset for q in questions}) >= 2:
        new = [row["left_out"]["mrr@10"] for row in leave_one_out(questions, fitter=fitter).values()]
        old = [row["left_out"]["mrr@10"] for row in leave_one_out(questions, fitter=old_fitter).values()]
    else:
        train = [q for q in questions if in_train(q.key)]
        test = [q for q in questions if not in_train(q.key)]
        if not train or not test:
            return {"passed": True, "new": None, "shipped": None, "protocol": "too few questions to check"}
        new_model, old_model = fitter(train), old_fitter(train)
        new = [float(np.mean([mrr(new_model.raw(q.x), q)[0] for q in test]))]
        old = [float(np.mean([mrr(old_model.raw(q.x), q)[0] for q in test]))]
    n, o = round(float(np.mean(new)), 4), round(float(np.mean(old)), 4)
    return {"passed": n >= o, "new": n, "shipped": o,
            "protocol": "leave-one-set-out" if len(new) > 1 else "70/30 split by article"}


def set_weights(questions: Sequence[Question]) -> list[float]:
    """Each set weighs as much as the others whatever its size (DuReader has 95 questions,
    DRCD 3,493): a question weighs 1 / sqrt(its set's size)."""
    size: dict[str, int] = {}
    for q in questions:
        size[q.dataset] = size.get(q.dataset, 0) + 1
    return [1.0 / np.sqrt(size[q.dataset]) for q in questions]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kb.learn", description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+", help="question sets in kb eval's format")
    ap.add_argument("--out", help="write the model fitted on every question here")
    ap.add_argument("--held-out-model", metavar="PATH",
                    help="also write the model fitted on the 70 %% split (benchmarks/tune_ranking.py --held-out "
                         "measures it through the real search on the other 30 %%)")
    ap.add_argument("--l2", type=float, default=L2)
    ap.add_argument("--seed", default=SEED, help="the split's seed")
    ap.add_argument("--model", help="embedding model (default: the bundled offline one)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--features", default=",".join(MODEL_FEATURES),
                    help="comma-separated features of the model (default: the shipped model's)")
    ap.add_argument("--leave-one-out", action="store_true",
                    help="report, for each set, a model fitted on the other sets against that set's channels, "
                         "weighted sum, RRF and the shipped model (the check a new model must pass)")
    ap.add_argument("--force", action="store_true",
                    help="write --out even when the new model is worse than the shipped one on the "
                         "leave-one-set-out check")
    args = ap.parse_args(argv)
    names = tuple(f.strip() for f in args.features.split(",") if f.strip())
    unknown = [f for f in names if f not in FEATURES]
    if unknown or not names:
        raise SystemExit(f"--features: unknown {', '.join(unknown) or '(none given)'}; kb computes "
                         + ", ".join(FEATURES))
    questions: list[Question] = []
    for d in args.datasets:
        questions += collect(d, progress=not args.no_progress, model=args.model)
    def fitter(train, l2=args.l2):
        return fit(train, l2, set_weights(train), names=names)

    if args.leave_one_out:
        print(json.dumps({"leave_one_out": leave_one_out(questions, args.l2, load_model(), fitter)},
                         ensure_ascii=False))
        return
    train = [q for q in questions if in_train(q.key, args.seed)]
    test = [q for q in questions if not in_train(q.key, args.seed)]
    held = fit(train, args.l2, set_weights(train), {"split": args.seed, "side": "train"}, names) if train else None
    if args.held_out_model and held is not None:
        held.save(args.held_out_model)
    result = {"split": {"seed": args.seed, "train": len(train), "held_out": len(test)},
              "held_out": report(test, held), "train": report(train, held)}
    if args.out:
        check = guard(questions, fitter)
        result["leave_one_out_check"] = check
        if not check["passed"] and not args.force:
            print(json.dumps(result, ensure_ascii=False))
            raise SystemExit("refused: on the leave-one-set-out check the new model ranks worse than the shipped "
                             f"one ({check['new']} < {check['shipped']} mean MRR@10); --force writes it anyway")
        info = {"trained_on": sorted({q.dataset for q in questions}), "questions": len(questions),
                "l2": args.l2, "command": "python -m kb.learn " + " ".join(args.datasets) + f" --out {args.out}",
                "held_out": result["held_out"]}
        model = fit(questions, args.l2, set_weights(questions), info, names)
        model.save(args.out)
        result["weights"] = dict(zip(model.features, model.weights.round(4).tolist()))
        result["out"] = args.out
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
