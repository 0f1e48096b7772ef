"""What an update costs on a large library: add, change and delete one document, re-index
with nothing changed, search over 10 segments against one, and a first build.

    python benchmarks/incremental.py --passages 100000 --passages 1000000 [--cli 200000]

For each size: a synthetic library (benchmarks/synthetic.py: recombined Chinese sentences,
random vectors, 20 passages per document) is built through kb's SegmentWriter (timed, with
its profile) and written as real files, so that every operation then goes through
`update_index` exactly as `kb index` runs it, each in a fresh process (its time inside the
process, its wall time and its peak RSS are reported). The embedder is `hash` (no model
time). Serving RSS: a fresh process that loads the index and answers 50 questions.
Query p50: the same questions against the generation with 10 segments and, after
`kb compact`, with one, alternating. ``--cli N``: wall time of the `kb index` command
adding one document to an N-passage library, process start included.

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
# The process's own peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec).
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
"""

OP = """
import json, sys, time
{PEAK}
t0 = time.perf_counter()
from kb.embed.embedders import HashEmbedder
from kb.index import update_index
t1 = time.perf_counter()
r = update_index(sys.argv[1], sys.argv[2], embedder=HashEmbedder(int(sys.argv[3])), progress=False,
                 warn=lambda m: None)
t2 = time.perf_counter()
merge = r.merge["seconds"] if r.merge else 0.0
print(json.dumps({"seconds": round(t2 - t1 - merge, 3), "merge_s": merge, "merged": bool(r.merge),
                  "import_s": round(t1 - t0, 3), "segments": r.segments, "added": r.added, "changed": r.changed,
                  "removed": r.removed, "passages": r.passages, "updated": r.updated,
                  "peak_rss_mb": peak_mb()}))
"""

SERVE = """
import json, sys, time
{PEAK}
from kb.embed.embedders import HashEmbedder
from kb.search.searcher import Searcher
qs = json.loads(open(sys.argv[2], encoding="utf-8").read())
s = Searcher.load(sys.argv[1], embedder=HashEmbedder(int(sys.argv[3])))
for q in qs:
    s.search(q, k=10)
print(json.dumps({"peak_rss_mb": peak_mb()}))
"""

OP, SERVE = OP.replace("{PEAK}", PEAK), SERVE.replace("{PEAK}", PEAK)


def run_py(script: str, *args) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    return out


def new_document(path: Path, n: int, seed: int, changed: bool = False) -> None:
    rng = random.Random(seed)
    pool = synthetic.sentence_pool(5000)
    paras = ["".join(rng.choice(pool) for _ in range(3)) for _ in range(n)]
    if changed:
        paras[n // 2] = "这一段在修改时被完全改写，内容与之前不同。" + paras[n // 2]
    path.write_text(f"新增文档{seed}\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")


def p50_ms(searcher, questions) -> float:
    times = []
    for q in questions:
        t = time.perf_counter()
        searcher.search(q, k=10)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def one_size(n: int, work: Path, questions: list[str], compact: bool) -> dict:
    from kb.embed.embedders import HashEmbedder
    from kb.index import compact_index
    from kb.search.searcher import Searcher

    corpus, index = work / f"docs-{n}", work / f"index-{n}"
    profile: dict = {}
    t0 = time.perf_counter()
    built = synthetic.build(index, n, DIM, corpus=corpus, timings=profile)
    build_s = time.perf_counter() - t0
    qfile = work / "questions.json"
    qfile.write_text(json.dumps(questions[:50], ensure_ascii=False), encoding="utf-8")
    serve = run_py(SERVE, index, qfile, DIM)
    emb = HashEmbedder(DIM)
    one = Searcher.load(index, embedder=emb)  # the single-segment generation, kept open
    out: dict = {"passages": n, "first_build_s": round(build_s, 1), "build": built, "build_profile": profile,
                 "serve_peak_rss_mb": serve["peak_rss_mb"]}

    doc = corpus / "zz-new.txt"
    new_document(doc, 20, 1)
    out["add"] = run_py(OP, corpus, index, DIM)
    new_document(doc, 20, 1, changed=True)
    out["change"] = run_py(OP, corpus, index, DIM)
    doc.unlink()
    out["delete"] = run_py(OP, corpus, index, DIM)
    out["unchanged"] = run_py(OP, corpus, index, DIM)
    out["add_rss_vs_serving"] = round(out["add"]["peak_rss_mb"] / serve["peak_rss_mb"], 3)

    # ten segments: one document per update (no merge below 11)
    seg = out["unchanged"]["segments"]
    i = 0
    while seg < 10:
        new_document(corpus / f"zz-more{i}.txt", 20, 100 + i)
        seg = run_py(OP, corpus, index, DIM)["segments"]
        i += 1
    many = Searcher.load(index, embedder=emb)
    for s in (many, one):
        p50_ms(s, questions[:20])  # warm
    a, b = [], []
    for rep in range(3):
        a.append(p50_ms(many, questions))
        b.append(p50_ms(one, questions))
    out["query"] = {"segments": len(many.snapshot.segments), "p50_ms_10_segments": round(statistics.median(a), 2),
                    "p50_ms_1_segment": round(statistics.median(b), 2)}
    out["query"]["ratio"] = round(out["query"]["p50_ms_10_segments"] / out["query"]["p50_ms_1_segment"], 3)
    if compact:  # merge everything back into one segment: time, and the same answers as the 10 segments
        report = compact_index(index)
        merged = Searcher.load(index, embedder=emb)
        top_many = [[h.id for h in many.search(q, k=10)] for q in questions[:50]]
        top_one = [[h.id for h in merged.search(q, k=10)] for q in questions[:50]]
        out["query"]["compact_s"] = report.merge["seconds"]
        out["query"]["top10_equal_after_compact"] = sum(x == y for x, y in zip(top_many, top_one)) / len(top_many)
    shutil.rmtree(index, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    return out


def cli_add(n: int, work: Path) -> dict:
    corpus, index = work / f"cli-docs-{n}", work / f"cli-index-{n}"
    synthetic.build(index, n, DIM, corpus=corpus)
    kb = Path(sys.executable).with_name("kb")
    new_document(corpus / "zz-new.txt", 20, 7)
    t0 = time.perf_counter()
    p = subprocess.run([str(kb), "index", str(corpus), "--index", str(index), "-q", "--json"], capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    report = json.loads(p.stdout)
    shutil.rmtree(index, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    return {"passages": n, "wall_s": round(wall, 2), "added": report["added"], "segments": report["segments"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, action="append", help="library size (repeatable)")
    ap.add_argument("--cli", type=int, default=0, help="also time `kb index` adding a document at this size")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--compact-max", type=int, default=200_000,
                    help="time `kb compact` (and compare its answers) up to this size")
    ap.add_argument("--workdir", default=None, help="where to build (default: a temporary folder)")
    args = ap.parse_args()
    sizes = args.passages or [100_000]
    questions = synthetic.questions(args.queries)
    result: dict = {"sizes": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in sizes:
            result["sizes"][str(n)] = one_size(n, Path(tmp), questions, compact=n <= args.compact_max)
            print(json.dumps({str(n): result["sizes"][str(n)]}, ensure_ascii=False), file=sys.stderr)
        if args.cli:
            result["cli_add_one_document"] = cli_add(args.cli, Path(tmp))
    if len(sizes) > 1:
        small, big = str(min(sizes)), str(max(sizes))
        result["add_time_ratio_largest_to_smallest"] = round(
            result["sizes"][big]["add"]["seconds"] / result["sizes"][small]["add"]["seconds"], 3)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
