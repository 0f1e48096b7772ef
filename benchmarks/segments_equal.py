"""Does a segmented index rank exactly as a fresh build? Replayed on the shared eval sets.

    python benchmarks/segments_equal.py [../shared/eval/cmrc2018_trial ...] [--rounds 12]

Each passage of a set becomes a document. Starting from a quarter of them, every round
adds, changes (a sentence appended) and deletes a few documents at random (fixed seed)
and runs `kb index` (hash embedder: the ranking arithmetic is what is compared, not the
model); every third round, and after `kb compact`, the hybrid, lexical and dense top-10
(ids and scores) of 100 of the set's questions are compared with a fresh build of the same
folder. Prints one JSON object as its last line: per set, the share of identical top-10
lists per mode (1.0 = all), segments seen, merges run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from kb.index import compact_index, update_index
from kb.search.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent
MODES = ("hybrid", "lexical", "dense")


def top10(s: Searcher, q: str, mode: str) -> list:
    return [(h.id, h.score) for h in s.search(q, k=10, mode=mode)]


def compare(seg: Searcher, fresh: Searcher, questions: list[str], tally: dict) -> None:
    for mode in MODES:
        same = sum(top10(seg, q, mode) == top10(fresh, q, mode) for q in questions)
        tally.setdefault(mode, [0, 0])
        tally[mode][0] += same
        tally[mode][1] += len(questions)


def run_set(folder: Path, rounds: int, work: Path) -> dict:
    passages = [json.loads(line) for line in (folder / "passages.jsonl").open(encoding="utf-8") if line.strip()]
    questions = [json.loads(line)["question"] for line in (folder / "queries.jsonl").open(encoding="utf-8")
                 if line.strip()][:100]
    rng = random.Random(0)
    docs, index = work / "docs", work / "index"
    docs.mkdir()
    pending = list(range(len(passages)))
    rng.shuffle(pending)
    live: set[int] = set()

    def write(i: int, extra: str = "") -> None:
        p = passages[i]
        (docs / f"p{i:05d}.txt").write_text(f"{p.get('title') or p['id']}\n\n{p['text']}{extra}\n", encoding="utf-8")
        live.add(i)

    for i in pending[: len(pending) // 4]:
        write(i)
    pending = pending[len(pending) // 4:]
    tally: dict = {}
    segments, merges = set(), 0
    step = max(1, len(pending) // (rounds * 2))
    for r in range(rounds):
        for i in pending[:step]:
            write(i)
        pending = pending[step:]
        for i in rng.sample(sorted(live), min(3, len(live))):
            write(i, extra=f"（第{r}轮修订）")
        for i in rng.sample(sorted(live), min(3, len(live))):
            (docs / f"p{i:05d}.txt").unlink()
            live.discard(i)
        rep = update_index(docs, index, model="hash", progress=False, warn=lambda m: None)
        merges += bool(rep.merge)
        segments.add(rep.segments)
        if r % 3 == 2:
            shutil.rmtree(work / "fresh", ignore_errors=True)
            update_index(docs, work / "fresh", model="hash", progress=False, warn=lambda m: None)
            compare(Searcher.load(index), Searcher.load(work / "fresh"), questions, tally)
            print(folder.name, "round", r, {m: round(a / b, 4) for m, (a, b) in tally.items()}, file=sys.stderr)
    compact_index(index)
    shutil.rmtree(work / "fresh", ignore_errors=True)
    update_index(docs, work / "fresh", model="hash", progress=False, warn=lambda m: None)
    after: dict = {}
    compare(Searcher.load(index), Searcher.load(work / "fresh"), questions, after)
    return {"documents": len(live), "questions": len(questions), "segments_seen": sorted(segments), "merges": merges,
            "identical_top10": {m: round(a / b, 4) for m, (a, b) in tally.items()},
            "identical_top10_after_compact": {m: round(a / b, 4) for m, (a, b) in after.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sets", nargs="*")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    sets = [Path(s) for s in args.sets] or sorted(p for p in (ROOT.parent / "shared" / "eval").glob("*")
                                                  if (p / "passages.jsonl").exists())
    out = {}
    for folder in sets:
        with tempfile.TemporaryDirectory() as tmp:
            out[folder.name] = run_set(folder, args.rounds, Path(tmp))
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
