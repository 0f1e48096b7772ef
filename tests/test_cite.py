"""Citation styles and exports against golden files (tests/golden/citations/, rewritten by
`python -m tests.golden`), and where documents' URLs come from."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from kb.present.cite import Reference, apa, bibtex, cite, gbt7714, ris, short
from kb.read.documents import parse_document
from kb.serve.cli import cli

from .golden import ACCESSED, CITATION_CASES, GOLDEN, citation_text


@pytest.mark.parametrize("name", list(CITATION_CASES))
def test_every_style_matches_its_golden_file(name):
    assert citation_text(CITATION_CASES[name]) == (GOLDEN / "citations" / f"{name}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", list(CITATION_CASES))
def test_missing_fields_leave_no_trace(name):
    text = citation_text(CITATION_CASES[name])
    for bad in ("None", "()", "[]", "《》", "{}", ", .", ". .", "..", " ,", ",,"):
        assert bad not in text.replace("[]\n", ""), (name, bad)


def test_gbt7714_online_and_offline():
    web = CITATION_CASES["url"]
    assert gbt7714(web, ACCESSED) == ("王芳. 数字政府建设的实践与思考[EB/OL]. 人民网, (2023-10-08)[2026-11-28]. "
                                     "http://theory.people.com.cn/n1/2023/1008/c40531-40090000.html.")
    assert gbt7714(CITATION_CASES["title_only"], ACCESSED) == "会议纪要[Z]."
    assert "[EB/OL]" not in gbt7714(CITATION_CASES["full"]) and "2026-11-28" not in gbt7714(CITATION_CASES["full"])


def test_apa_dates_and_missing_author():
    assert apa(CITATION_CASES["full"]).startswith("董清河. (2024, July 11). 对生活失去信心的说说")
    assert apa(CITATION_CASES["no_author"]) == "关于进一步做好基层减负工作的通知. (2025, March 2). 中国政府网."
    assert "(n.d.)" in apa(CITATION_CASES["no_date"])


def test_short_style_is_the_old_citation():
    ref = Reference(title="标题", author="张三", author_position="局长", publisher="来源", date="2024-01-02",
                    sections=("一、总则", "一要学习"))
    assert short(ref) == "张三（局长）. 《标题》. 来源, 2024-01-02. 章节：一、总则 > 一要学习."
    assert cite(ref) == short(ref) and ref.locator == "一、总则 > 一要学习"
    with pytest.raises(ValueError):
        cite(ref, "mla")


def test_exports_escape_and_separate_records():
    refs = [Reference(title="50% 的{难题}_与#号", key="k1"), Reference(title="第二条", key="k1")]
    bib = bibtex(refs)
    assert r"50\% 的\{难题\}\_与\#号" in bib and bib.count("@misc{") == 2 and "k1-2" in bib  # keys stay unique
    records = ris(refs).strip().split("ER  - ")
    assert len([r for r in records if r.strip()]) == 2
    assert all(re.match(r"^[A-Z][A-Z0-9]  - ", line) for line in ris(refs).splitlines() if line.strip())


@pytest.mark.parametrize("raw, name, url", [
    (b'<html><head><title>T</title><link rel="canonical" href="https://e.org/a"></head><body><p>x</p></body></html>',
     "a.html", "https://e.org/a"),
    (b'<html><head><meta property="og:url" content="http://e.org/b"></head><body><p>x</p></body></html>',
     "b.html", "http://e.org/b"),
    ("标题\n\n正文。\n\n原文链接：https://www.gov.cn/c.htm。".encode(), "c.txt", "https://www.gov.cn/c.htm"),
    ("标题\n来源：https://news.e.org/d\n\n正文。".encode(), "d.txt", "https://news.e.org/d"),
    ("标题\n\n正文里提到 https://e.org/not-the-source 这个网址。".encode(), "e.txt", None),
    (b'<html><head><link rel="canonical" href="javascript:alert(1)"></head><body><p>x</p></body></html>',
     "f.html", None),
])
def test_document_urls(raw, name, url):
    assert parse_document(raw, name).meta.get("url") == url


def test_cli_cite_and_export(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "web.txt").write_text("数字政府建设\n\n来源：人民网 时间：2023-10-08\n\n一、主要做法\n推进数据共享，"
                                    "提升服务效能。\n\n原文链接：http://e.org/x.html\n", encoding="utf-8")
    idx = str(tmp_path / "idx")
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(corpus), "--index", idx, "--model", "hash:64"]).exit_code == 0
    out = json.loads(runner.invoke(cli, ["search", "数据共享", "--index", idx, "--json", "--cite", "gbt7714"]).stdout)
    assert "数字政府建设[EB/OL]. 人民网, (2023-10-08)[" in out["hits"][0]["citation"]
    assert out["hits"][0]["meta"]["url"] == "http://e.org/x.html"
    r = runner.invoke(cli, ["search", "数据共享", "--index", idx, "--cite", "apa"])
    assert "数字政府建设. (2023, October 8). 人民网. http://e.org/x.html" in r.stdout  # no author: title first
    r = runner.invoke(cli, ["search", "数据共享", "--index", idx, "--export", "ris", "-k", "1"])
    assert r.stdout.startswith("TY  - ELEC\n") and "UR  - http://e.org/x.html" in r.stdout
    r = runner.invoke(cli, ["search", "数据共享", "--index", idx, "--export", "bibtex", "-k", "1"])
    assert r.stdout.startswith("@misc{") and "url = {http://e.org/x.html}" in r.stdout
    assert runner.invoke(cli, ["search", "x", "--index", idx, "--cite", "mla"]).exit_code == 2


def test_hits_of_one_document_are_one_record_with_every_place_cited():
    doc = dict(title="关于做好年度工作的通知", author="李明", date="2024-03-01", doc="d1", path="a.pdf")
    refs = [Reference(**doc, sections=("一、总体要求",), place="第3页"),
            Reference(**doc, sections=("二、主要任务",), place="第5页"),
            Reference(**doc, sections=("一、总体要求",), place="第3页"),  # the same place again
            Reference(title="另一份文件", doc="d2", path="b.txt", sections=("三、保障",))]
    bib = bibtex(refs)
    assert bib.count("@misc{") == 2 and "@misc{李明2024做好年度," in bib and "@misc{另一份文," in bib
    assert "pages = {3--5}" in bib and "note = {章节：一、总体要求；章节：二、主要任务}" in bib
    records = [r for r in ris(refs).split("ER  - ") if r.strip()]
    assert len(records) == 2 and "ID  - 李明2024做好年度" in records[0] and "SP  - 3\nEP  - 5" in records[0]
    ids = [line for line in ris(refs).splitlines() if line.startswith("ID  - ")]
    assert len(ids) == len(set(ids)) == 2
    no_pages = [Reference(**doc, sections=("一、总体要求",), place="第5张幻灯片"), Reference(**doc, sections=("二、",))]
    assert "note = {章节：一、总体要求（第5张幻灯片）；章节：二、}" in bibtex(no_pages)


def test_citation_keys_are_the_same_in_every_build_and_tell_namesakes_apart(tmp_path):
    from kb.index import update_index
    from kb.search.searcher import Searcher

    docs = tmp_path / "docs"
    docs.mkdir()
    body = ("来源：市政府\n\n发布日期：2024年3月1日\n\n一、总体要求\n\n做好年度考核工作。\n\n"
            "二、主要任务\n\n按时报送考核材料。")
    (docs / "a.txt").write_text("关于做好年度考核工作的通知\n\n" + body, encoding="utf-8")
    (docs / "b.txt").write_text("关于做好年度考核工作的补充通知\n\n" + body, encoding="utf-8")  # the same key base
    (docs / "c.txt").write_text("乡村振兴规划\n\n来源：农业农村局\n\n推进乡村振兴。", encoding="utf-8")
    keys = []
    for name in ("one", "two"):
        update_index(docs, tmp_path / name, model="hash:64", progress=False, warn=lambda m: None)
        s = Searcher.load(tmp_path / name)
        keys.append({h.path: h.cite_key for h in s.search("考核 乡村振兴", k=20, mode="lexical")})
    assert keys[0] == keys[1] and len(set(keys[0].values())) == 3
    assert keys[0]["c.txt"] == "农业农村局乡村振兴"
    assert keys[0]["a.txt"].startswith("市政府2024做好年度-") and keys[0]["b.txt"].startswith("市政府2024做好年度-")
    hits = Searcher.load(tmp_path / "one").search("考核", k=10, mode="lexical")
    assert sum(h.path == "a.txt" for h in hits) >= 2
    assert bibtex([h.reference for h in hits]).count("@misc{") == len({h.path for h in hits})
