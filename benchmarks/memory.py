"""Peak memory while searching and while indexing, and index size on disk.

    python benchmarks/memory.py --passages 100000 [--vector-kind flat fp16] [--index-docs 100]

Search: a fresh process loads a synthetic index (benchmarks/synthetic.py) and runs 100
hybrid queries; its peak RSS (VmHWM) is compared with the raw size of the vectors
(n x dim x 4 bytes) plus the passage texts (UTF-8). Indexing: a fresh process runs
`kb index` with the default model over documents made from ../shared/eval passages.
Disk: the index folder's size per 100k passages against the same raw size.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

SEARCH = """
import json, sys, numpy as np
from kb.search.searcher import Searcher
s = Searcher.load({index!r})
qs = json.load(open({questions!r}, encoding="utf-8"))
vs = np.random.default_rng(0).standard_normal((len(qs), s.snapshot.dim)).astype(np.float32)
vs /= np.linalg.norm(vs, axis=1, keepdims=True)
for q, v in zip(qs, vs):
    s.prime_query(q, v)
    s.search(q, k=10)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
text_bytes = sum(seg.store.con.execute("SELECT SUM(LENGTH(CAST(text AS BLOB))) FROM passages").fetchone()[0] or 0
                 for seg in s.snapshot.segments)
print(json.dumps({{"peak_rss_mb": hwm / 1024, "text_bytes": text_bytes, "n": s.count, "dim": s.snapshot.dim}}))
"""

INDEX = """
import json, sys
from kb.index import update_index
r = update_index({corpus!r}, {index!r}, progress=False, warn=lambda m: None)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({{"peak_rss_mb": hwm / 1024, "passages": r.passages}}))
"""


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, nargs="+", default=[100000])
    ap.add_argument("--index-docs", type=int, default=100, help="documents for the indexing run (0: skip)")
    ap.add_argument("--vector-kind", nargs="+", default=["auto"], choices=["auto", "flat", "fp16", "hnsw"],
                    help="vector index kinds to compare (keys of the result: search/disk -> kind -> size)")
    args = ap.parse_args()
    out: dict = {"search": {}, "disk": {}, "index": {}}
    with tempfile.TemporaryDirectory() as tmp:
        questions = Path(tmp) / "questions.json"  # made here, so the search process holds only the index
        questions.write_text(json.dumps(synthetic.questions(100), ensure_ascii=False), encoding="utf-8")
        for kind in args.vector_kind:
            for n in args.passages:
                d, _ = synthetic.ensure(n, vector_kind=kind)
                code = SEARCH.format(index=str(d), questions=str(questions))
                r = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.strip().splitlines()[-1])
                raw = r["n"] * r["dim"] * 4 + r["text_bytes"]
                out["search"].setdefault(kind, {})[str(n)] = {
                    "peak_rss_mb": round(r["peak_rss_mb"], 1), "raw_mb": round(raw / 2**20, 1),
                    "ratio": round(r["peak_rss_mb"] * 2**20 / raw, 2)}
                size = dir_size(d)
                out["disk"].setdefault(kind, {})[str(n)] = {
                    "index_mb": round(size / 2**20, 1), "raw_mb": round(raw / 2**20, 1),
                    "per_100k_mb": round(size / 2**20 * 100000 / n, 1), "ratio": round(size / raw, 2)}
                print(kind, n, out["search"][kind][str(n)], out["disk"][kind][str(n)], file=sys.stderr)
    if args.index_docs:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "docs"
            corpus.mkdir()
            src = synthetic.SHARED_EVAL / "cmrc2018_trial" / "passages.jsonl"
            lines = src.read_text(encoding="utf-8").splitlines()[: args.index_docs] if src.exists() else []
            for i, line in enumerate(lines):
                p = json.loads(line)
                (corpus / f"d{i:05d}.txt").write_text(f"{p['title']}\n\n{p['text']}", encoding="utf-8")
            if lines:
                r = json.loads(subprocess.run(
                    [sys.executable, "-c", INDEX.format(corpus=str(corpus), index=str(Path(tmp) / "index"))],
                    capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
                out["index"] = {"documents": len(lines), **{k: round(v, 1) for k, v in r.items()}}
                print("index", out["index"], file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
