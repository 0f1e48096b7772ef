"""OCR accuracy, speed and retrieval on scans of known text; prints JSON.

    python benchmarks/ocr.py [--pages-per-set 3] [--eval ../shared/eval]

- Pages: the sample speech (corpus/) and passages of the shared evaluation sets, rendered
  to A4 at 150 dpi with a CJK font (tests/scans.py), clean and degraded (rotated 1°,
  Gaussian noise, blur).
- Character accuracy = 1 − CER: edit distance between what kb makes of the page (OCR,
  then paragraphs rejoined) and the text drawn, both NFKC-normalised without whitespace
  (full-width and half-width punctuation count as the same character).
- Speed: seconds per page on this machine (engine warm; the PDF path adds rendering).
- Retrieval: the sample speech as an image-only PDF, indexed with the default pipeline
  (OCR, offline model), and the seed questions (shared eval/seed_dev) asked of it: how many
  find their expected passage at top-1 (goal ≥ 5 of 6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb import ocr  # noqa: E402
from tests.scans import degrade, pdf_of, render_pages  # noqa: E402


def norm(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def sample_paragraphs() -> tuple[str, list[str]]:
    path = next(iter(sorted((ROOT / "corpus").glob("*.txt"))))
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines[0], lines[1:]


def eval_paragraphs(folder: Path, n_chars: int) -> list[str]:
    out, total = [], 0
    with open(folder / "passages.jsonl", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"].strip()
            out.append(text)
            total += len(text)
            if total >= n_chars:
                break
    return out


def measure(pages, truth) -> dict:
    chars = errors = 0
    seconds = []
    for image, lines in zip(pages, truth):
        t0 = time.perf_counter()
        text = ocr.rejoin(ocr.read_page(image), image.size[1])  # what indexing does, without the cache
        seconds.append(time.perf_counter() - t0)
        expected = norm("".join(lines))
        errors += edit_distance(norm(text), expected)
        chars += len(expected)
    return {"pages": len(pages), "chars": chars, "char_accuracy": round(1 - errors / max(chars, 1), 4),
            "seconds_per_page": round(sum(seconds) / max(len(seconds), 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages-per-set", type=int, default=2)
    ap.add_argument("--eval", default=str(ROOT.parent / "shared" / "eval"))
    args = ap.parse_args()
    ocr.engine()  # load once, outside the timings
    sets: dict[str, tuple[str | None, list[str]]] = {"sample_speech": sample_paragraphs()}
    eval_dir = Path(args.eval)
    for name in ("cmrc2018_trial", "drcd_test", "dureader2_demo_train"):
        if (eval_dir / name / "passages.jsonl").is_file():
            sets[name] = (None, eval_paragraphs(eval_dir / name, 1100 * args.pages_per_set))
    result: dict = {"engine": ocr.ENGINE, "dpi": 150, "cpus": os.cpu_count(), "accuracy": {}}
    clean_all, noisy_all = [], []
    for name, (title, paragraphs) in sets.items():
        pages, truth = render_pages(paragraphs, title=title, max_pages=args.pages_per_set)
        clean = measure(pages, truth)
        noisy = measure([degrade(p, seed=i) for i, p in enumerate(pages)], truth)
        result["accuracy"][name] = {"clean": clean, "noisy": noisy}
        clean_all.append(clean)
        noisy_all.append(noisy)
        print(f"{name}: clean {clean['char_accuracy']} noisy {noisy['char_accuracy']}", file=sys.stderr)

    def pooled(rows):
        chars = sum(r["chars"] for r in rows)
        acc = sum(r["char_accuracy"] * r["chars"] for r in rows) / max(chars, 1)
        secs = sum(r["seconds_per_page"] * r["pages"] for r in rows) / max(sum(r["pages"] for r in rows), 1)
        return {"char_accuracy": round(acc, 4), "seconds_per_page": round(secs, 2)}

    result["clean"] = {**pooled(clean_all), "target": 0.97}
    result["noisy"] = {**pooled(noisy_all), "target": 0.93}
    result["retrieval"] = retrieval(eval_dir / "seed_dev")
    print(json.dumps(result, ensure_ascii=False, indent=1))


def retrieval(seed_dir: Path) -> dict:
    from kb.eval.evaluate import evaluate
    from kb.index import update_index

    title, paragraphs = sample_paragraphs()
    pages, _ = render_pages(paragraphs, title=title)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        (folder / "speech-scan.pdf").write_bytes(pdf_of(pages))
        t0 = time.perf_counter()
        report = update_index(folder, Path(tmp) / "index", progress=False, warn=lambda m: print(m, file=sys.stderr))
        seconds = time.perf_counter() - t0
        out = {"pages": len(pages), "index_seconds": round(seconds, 1), "passages": report.passages}
        if (seed_dir / "queries.jsonl").is_file():
            res = evaluate(seed_dir, modes=["hybrid"], index=Path(tmp) / "eval", corpus=folder)
            hybrid = res["modes"]["hybrid"]
            out.update({"questions": res["queries"], "top1_passed": hybrid["top1_passed"],
                        "failures": hybrid["failures"], "target": "≥ 5 of 6"})
        return out


if __name__ == "__main__":
    main()
