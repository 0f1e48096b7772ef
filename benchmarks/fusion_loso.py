"""Choose the learned fusion by sources it never saw: leave-one-set-out over candidate models.

    python benchmarks/fusion_loso.py ../shared/eval/cmrc2018_trial ../shared/eval/drcd_test \\
        ../shared/eval/dureader2_demo_train [--cache /tmp/loso]

For each candidate (a feature set and an L2 strength) and each set, a model fitted on the other
sets ranks that set's candidates (kb.learn's pool: 150 candidates a question, as kb eval asks);
beside them the set's lexical, dense, weighted-sum (convex), RRF and shipped-model rankings. The
score of a candidate is its worst margin over the best single channel across the left-out sets.
The questions' features are cached (``--cache``), so a second run only fits. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.eval.learn import collect, fit, leave_one_out, set_weights  # noqa: E402
from kb.rank.fusion import FEATURES, load_model  # noqa: E402

# Candidate feature sets: all of today's, and ones without what describes a source's layout
# (documents of one paragraph vs pages of many, lengths) rather than a passage's relevance.
ORIGINAL = FEATURES[:17]  # the features of the model shipped before leave-one-set-out chose one
CANDIDATES = {
    "all": ORIGINAL,
    "all_gated": FEATURES,
    "gated_no_doc_layout": tuple(f for f in FEATURES if f not in ("doc_hits", "doc_best_other", "log_length", "sub",
                                                                  "family_best")),
    "no_doc_layout": tuple(f for f in ORIGINAL if f not in ("doc_hits", "doc_best_other", "log_length", "sub",
                                                            "family_best")),
    "channels_and_cover": ("dense", "lexical", "lexical_ramped", "convex", "dense_rank", "lexical_rank",
                           "cover", "cover_ramped", "head_cover"),
    "channels": ("dense", "lexical", "dense_rank", "lexical_rank"),
    "gated_channels_and_cover": ("dense", "lexical", "lexical_ramped", "convex", "dense_rank", "lexical_rank",
                                 "cover", "cover_ramped", "head_cover", "dense_z", "lexical_z", "dense_z_x_agree",
                                 "lexical_z_x_agree"),
}
L2S = (1e-2, 1e-1, 1.0)


def questions_of(datasets: list[str], cache: Path | None) -> list:
    out = []
    for d in datasets:
        path = cache / (Path(d).name + ".pkl") if cache else None
        if path is not None and path.exists():
            out += pickle.loads(path.read_bytes())
            continue
        qs = collect(d, progress=False)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(qs))
        out += qs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="these candidates only")
    ap.add_argument("--l2", nargs="+", type=float, default=list(L2S))
    args = ap.parse_args()
    questions = questions_of(args.datasets, args.cache)
    shipped = load_model()
    result: dict = {"sets": {}, "candidates": {}}
    for name, names in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        for l2 in args.l2:
            def fitter(train, names=names, l2=l2):
                return fit(train, l2, set_weights(train), names=names)
            table = leave_one_out(questions, l2, shipped, fitter=fitter)
            margins = {s: round(row["left_out"]["mrr@10"] - max(row["lexical"]["mrr@10"], row["dense"]["mrr@10"]), 4)
                       for s, row in table.items()}
            result["candidates"][f"{name}@{l2:g}"] = {
                "left_out_mrr@10": {s: row["left_out"]["mrr@10"] for s, row in table.items()},
                "left_out_hit@1": {s: row["left_out"]["hit@1"] for s, row in table.items()},
                "margin_over_best_channel": margins, "worst_margin": min(margins.values())}
            for s, row in table.items():
                result["sets"][s] = {m: v for m, v in row.items() if m != "left_out"}
    best = max(result["candidates"], key=lambda c: result["candidates"][c]["worst_margin"])
    result["best"] = best
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
