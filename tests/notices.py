"""A library of notices with varied fields, and the meaning of a filter written out one
document at a time (tests/test_filters.py and benchmarks/filters_exact.py use the same ones).

``write_notices(folder, n)`` writes ``n`` short notices over sources, authors, years, folders,
types (txt, md, html) and tags — a fifth of them without a date — and ``passes(filters, doc)``
is the per-document oracle the store's vectorised field index is checked against.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from kb.search.filters import Filters, document_fields

SUBJECTS = ["社会保险缴费", "医疗保险报销", "养老金发放", "住房公积金提取", "差旅费报销", "安全生产检查",
            "职业技能培训", "义务教育招生", "城乡低保审核", "medical insurance"]
SOURCES = ["人社局", "财政局", "医保局"]
YEARS = ["2021", "2022", "2023", "2024"]


def write_notices(folder: Path, n: int = 60, sources: list[str] = SOURCES, seed: int = 7) -> Path:
    """``n`` notices under ``folder/YEAR/人社|其他/`` (only 人社局's under 人社). Every field is
    drawn at random so that no two fields move together."""
    rng = random.Random(seed)
    for i in range(n):
        source, subject = rng.choice(sources), rng.choice(SUBJECTS)
        year = rng.choice(YEARS)
        sub = folder / year / ("人社" if source == "人社局" else "其他")
        sub.mkdir(parents=True, exist_ok=True)
        date = f"{year}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日" if rng.random() < 0.8 else ""
        author = rng.choice(["张明", "李华", "王芳", ""])
        lines = [f"关于{subject}的通知（第{i}号）", f"来源：{source}"]
        if author:
            lines.append(f"作者：{author}")
        if date:
            lines.append(f"发布日期：{date}")
        lines.append(f"各单位要做好{subject}工作，{rng.choice(SUBJECTS)}同步推进，编号{i:03d}。")
        if rng.random() < 0.5:
            lines.append(f"二、{rng.choice(SUBJECTS)}的办理时限为{rng.randint(3, 30)}个工作日，材料齐全的当场受理。")
        body = "\n\n".join(lines)
        kind = rng.choice(["txt", "txt", "md", "html"])
        if kind == "md":
            tags = ", ".join(rng.sample(["社保", "财务", "民生", f"第{i % 3}组"], rng.randint(1, 2)))
            (sub / f"n{i}.md").write_text(f"---\ntags: [{tags}]\n---\n\n{body}", encoding="utf-8")
        elif kind == "html":
            paras = "".join(f"<p>{line}</p>" for line in lines[1:])
            (sub / f"n{i}.html").write_text(
                f"<html><head><title>{lines[0]}</title><meta name=\"keywords\" content=\"民生\"></head>"
                f"<body><h1>{lines[0]}</h1>{paras}</body></html>", encoding="utf-8")
        else:
            (sub / f"n{i}.txt").write_text(body, encoding="utf-8")
    return folder


def random_filters(rng: random.Random, sources: list[str] = SOURCES) -> Filters:
    """A random combination of fields (some of them matching nothing together)."""
    values: dict[str, Any] = {}
    if rng.random() < 0.5:
        values["source"] = rng.sample(sources, rng.randint(1, 2))
    if rng.random() < 0.4:
        values["folder"] = [rng.choice(YEARS) + rng.choice(["", "/人社", "/其他"])]
    if rng.random() < 0.3:
        values["type"] = rng.sample(["md", "txt", "html"], rng.randint(1, 2))
    if rng.random() < 0.3:
        values["after"] = rng.choice(YEARS)
    if rng.random() < 0.2:
        values["before"] = rng.choice([y for y in YEARS if y >= values.get("after", "")]) + "-06-30"
    if rng.random() < 0.3:
        values["tag"] = [rng.choice(["社保", "财务", "民生"])]
    if rng.random() < 0.15:
        values["author"] = [rng.choice(["张明", "李华", "王芳"])]
    return Filters.make(**values)


def passes(f: Filters, doc: dict) -> bool:
    """The meaning of a filter for one document (the oracle for the store's field index)."""
    own = document_fields(doc)
    checks = {
        "source": lambda: own["source"] in f.source, "author": lambda: own["author"] in f.author,
        "type": lambda: own["type"] in f.type, "tag": lambda: bool(set(f.tag) & set(own["tags"])),
        "doc": lambda: doc["doc_id"] in f.doc,
        "after": lambda: own["date"] is not None and own["date"] >= f.after,
        "before": lambda: own["date"] is not None and own["date"] <= f.before,
        "folder": lambda: any(own["folder"] == p or own["folder"].startswith(p + "/") for p in f.folder),
    }
    return all(checks[name]() for name in f.set_fields())


def allowed_documents(docs: list[dict], f: Filters) -> set[str]:
    return {d["doc_id"] for d in docs if passes(f, d)}


def channel_runs_exact(searcher, q: str, f: Filters, allowed_docs: set[str], n: int = 50) -> bool:
    """The candidates each channel hands the fusion under ``f`` are the unfiltered channel
    runs with the other documents taken out (in order; equal scores by id hash, also at the cut)."""
    from kb.text.process import tokenize

    tokens = tokenize(q)
    got = searcher.gather(q, tokens, n, "hybrid", searcher.allowed(f))
    every = searcher.gather(q, tokens, searcher.count, "hybrid", None)
    if got is None:
        return every is None or not any(every.records[r]["doc_id"] in allowed_docs for r in every.rows)

    def restricted(run):
        return [every.records[r]["id"] for r in run if every.records[r]["doc_id"] in allowed_docs][:n]

    return (restricted(every.dense_run) == [got.records[r]["id"] for r in got.dense_run]
            and restricted(every.lexical_run) == [got.records[r]["id"] for r in got.lexical_run])
