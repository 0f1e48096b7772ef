"""Narrowing a search (issue 28): the fields each document carries, one filter model for the
CLI, the API, MCP and the page, a filter that matches nothing giving nothing (and saying why),
facet counts, and the same answers on both stores."""

from __future__ import annotations

import asyncio
import io
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from kb.embed.embedders import HashEmbedder
from kb.index import update_index
from kb.read.documents import parse_document
from kb.search.filters import FilterError, Filters, document_fields, facet_counts, parse_date
from kb.search.searcher import Searcher, search_response
from kb.serve.cli import cli

from .notices import SUBJECTS, allowed_documents, channel_runs_exact, random_filters, write_notices


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    docs = write_notices(root / "docs")
    update_index(docs, root / "index", embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
    return docs, root / "index"


@pytest.fixture(scope="module")
def searcher(library):
    return Searcher.load(library[1], embedder=HashEmbedder(64))


# ---------------------------------------------------------------------------- fields


@pytest.mark.parametrize("written", ["发布日期：2024/07/11", "发布日期：2024年7月11日", "日期：2024-07-11",
                                     "时间：2024.7.11 09:30"])
def test_a_header_date_in_any_usual_form_is_the_documents_date(written):
    doc = parse_document(f"通知\n\n{written}\n\n正文。".encode(), "a.txt")
    assert doc.meta["date"] == "2024-07-11"


def test_front_matter_gives_title_date_source_and_tags_and_is_not_text():
    doc = parse_document("---\ntitle: 社保通知\ndate: 2024/07/11\nsource: 人社局\ntags:\n  - 社保\n  - 医保\n---\n\n"
                         "居民医保缴费标准。".encode(), "a.md")
    assert doc.title == "社保通知" and doc.meta["source"] == "人社局"
    assert doc.meta["date"] == "2024-07-11" and doc.meta["tags"] == ["社保", "医保"]
    assert "---" not in doc.text and "tags" not in doc.text
    inline = parse_document("---\ntags: [养老, 社保]\nkeywords: 公积金、住房\n---\n正文。".encode(), "b.md")
    assert inline.meta["tags"] == ["养老", "社保", "公积金", "住房"]


def test_html_meta_and_time_give_the_pages_date_and_keywords_its_tags():
    meta = parse_document('<html><head><meta property="article:published_time" content="2024-03-02T10:00:00+08:00">'
                          '</head><body><p>正文内容。</p></body></html>'.encode(), "a.html")
    assert meta.meta["date"] == "2024-03-02"
    page = '<html><body><time datetime="2022-11-30">11月30日</time><p>正文。</p></body></html>'
    timed = parse_document(page.encode(), "b.html")
    assert timed.meta["date"] == "2022-11-30"
    tagged = parse_document('<html><head><meta name="keywords" content="社保, 民生；缴费"></head>'
                            '<body><p>正文。</p></body></html>'.encode(), "c.html")
    assert tagged.meta["tags"] == ["社保", "民生", "缴费"]  # the page's keywords are its tags
    assert "tags" not in timed.meta


def test_docx_and_pdf_properties_give_date_and_tags_where_the_text_has_none():
    import datetime

    from docx import Document
    from pypdf import PdfWriter

    d = Document()
    d.add_paragraph("关于缴费的通知")
    d.add_paragraph("正文内容。")
    d.core_properties.created = datetime.datetime(2023, 5, 6, 8, 0)
    d.core_properties.keywords = "社保; 医保"
    buf = io.BytesIO()
    d.save(buf)
    doc = parse_document(buf.getvalue(), "a.docx")
    assert doc.meta["date"] == "2023-05-06" and doc.meta["tags"] == ["社保", "医保"]
    d.add_paragraph("日期：2024-01-02")  # not in the header: the property stays
    d.paragraphs[1].insert_paragraph_before("发布日期：2024年2月3日")
    buf = io.BytesIO()
    d.save(buf)
    assert parse_document(buf.getvalue(), "b.docx").meta["date"] == "2024-02-03"  # the text's own date wins

    from pypdf import PdfReader

    from .test_documents import _tiny_pdf

    w = PdfWriter(clone_from=PdfReader(io.BytesIO(_tiny_pdf("Safety inspection notice."))))
    w.add_metadata({"/CreationDate": "D:20220304101500+08'00'", "/Keywords": "安全生产,检查"})
    buf = io.BytesIO()
    w.write(buf)
    pdf = parse_document(buf.getvalue(), "c.pdf")
    assert pdf.meta["date"] == "2022-03-04" and pdf.meta["tags"] == ["安全生产", "检查"]


def test_fields_of_a_document_row():
    f = document_fields({"doc_id": "x", "path": "2024/人社/a.pdf", "format": "pdf",
                         "meta": {"source": "人社局", "date": "2024-07-11", "tags": ["社保"]}})
    assert f == {"source": "人社局", "author": "", "date": "2024-07-11", "year": "2024", "folder": "2024/人社",
                 "type": "pdf", "tags": ["社保"]}
    scan = document_fields({"doc_id": "y", "path": "b.png", "format": "image", "meta": {}})
    assert scan["type"] == "scan" and scan["date"] is None and scan["year"] == "无日期" and scan["folder"] == ""


def test_tags_csv_tags_by_path_and_a_change_retags_without_embedding(tmp_path):
    docs = tmp_path / "docs"
    (docs / "2024").mkdir(parents=True)
    (docs / "2024" / "a.txt").write_text("通知甲\n\n社保缴费的安排。", encoding="utf-8")
    (docs / "b.txt").write_text("通知乙\n\n公积金提取的安排。", encoding="utf-8")
    (docs / ".kb").mkdir()
    (docs / ".kb" / "tags.csv").write_text("pattern,tags\n2024/*,社保;年度\n# a comment\n*.txt,通知\n",
                                           encoding="utf-8")
    update_index(docs, tmp_path / "index", embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
    s = Searcher.load(tmp_path / "index")
    tags = {d["path"]: d["meta"].get("tags") for d in s.docs}
    assert tags == {"2024/a.txt": ["社保", "年度", "通知"], "b.txt": ["通知"]}
    (docs / ".kb" / "tags.csv").write_text("b.txt,公积金\n", encoding="utf-8")
    r = update_index(docs, tmp_path / "index", embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
    assert r.updated and r.embedded == 0
    assert {d["path"]: d["meta"].get("tags") for d in Searcher.load(tmp_path / "index").docs} == {
        "2024/a.txt": None, "b.txt": ["公积金"]}


# ---------------------------------------------------------------------------- the model


def test_filter_values_are_checked_where_they_enter():
    assert parse_date("2024", "after") == "2024-01-01" and parse_date("2024", "before", end=True) == "2024-12-31"
    assert parse_date("2024-02", "before", end=True) == "2024-02-29"
    f = Filters.make(type=["PDF", ".md"], folder="2024/人社/", source="人社局")
    assert f.type == ("pdf", "md") and f.folder == ("2024/人社",) and f.source == ("人社局",)
    for values, field in (({"after": "昨天"}, "after"), ({"before": "2024-02-30"}, "before"),
                          ({"type": "exe"}, "type"), ({"folder": "../etc"}, "folder"), ({"colour": "red"}, "colour"),
                          ({"after": "2024-05-01", "before": "2024-04-01"}, "before"), ({"tag": ["x"] * 101}, "tag")):
        with pytest.raises(FilterError) as e:
            Filters.make(**values)
        assert e.value.field == field and str(e.value).startswith(field + ":")
    assert not Filters.make(source=[], after="", tag=None)


def _expected(searcher, filters):
    return allowed_documents(searcher.docs, filters)


def test_each_field_narrows_and_fields_combine(searcher):
    cases = [Filters.make(source="人社局"), Filters.make(source=["人社局", "财政局"]), Filters.make(after="2023-01-01"),
             Filters.make(before="2022"), Filters.make(folder="2022"), Filters.make(folder="2022/人社"),
             Filters.make(type="md"), Filters.make(tag="社保"), Filters.make(source="财政局", after="2023", type="txt")]
    for f in cases:
        hits = searcher.search("报销 缴费 通知", k=50, mode="lexical", filters=f)
        assert hits and {h.doc_id for h in hits} <= _expected(searcher, f), f
    by_doc = {d["doc_id"]: document_fields(d) for d in searcher.docs}
    for h in searcher.search("通知", k=50, mode="lexical", filters=Filters.make(folder="2022")):
        assert by_doc[h.doc_id]["folder"].startswith("2022")  # the sub-tree
    dated = searcher.search("通知", k=50, mode="lexical", filters=Filters.make(after="2000"))
    assert dated and all(by_doc[h.doc_id]["date"] for h in dated)  # a date range leaves undated documents out


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_filtered_results_are_the_unfiltered_ranking_restricted(searcher, mode):
    """Exactness: 50 random filter combinations. A filtered search returns only allowed
    documents; each channel's candidates are its unfiltered run with the other documents taken
    out; so the keyword and semantic top 10 are the unfiltered ranking restricted, scores and
    all. (The learned hybrid ranks by where a passage stands among its candidates, and those
    are the allowed ones: its input is what is exact.)"""
    rng = random.Random(3)
    for _ in range(50):
        f = random_filters(rng)
        q = rng.choice(SUBJECTS)
        got = searcher.search(q, k=10, mode=mode, filters=f)
        allowed = _expected(searcher, f)
        assert {h.doc_id for h in got} <= allowed
        if not allowed:
            assert got == []
            continue
        if mode == "hybrid":
            assert channel_runs_exact(searcher, q, f, allowed), (f, q)
        else:
            restricted = [h for h in searcher.search(q, k=searcher.count, mode=mode) if h.doc_id in allowed][:10]
            assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in restricted], (f, q)


def test_equal_scores_at_the_cut_are_chosen_by_passage_not_by_position():
    from kb.store.bm25 import top_k

    scores = np.array([3, 1, 1, 1, 1, 2], dtype=np.float32)
    keys = np.array([9, 40, 10, 30, 20, 5], dtype=np.uint64)  # each row's passage-id hash
    assert top_k(scores, 3, keys=keys)[0].tolist() == [0, 5, 2]  # of the four 1s, the smallest key
    without_2 = np.array([True, True, False, True, True, True])
    assert top_k(scores, 3, without_2, keys)[0].tolist() == [0, 5, 4]  # the next smallest: a filter only removes


def test_a_filter_that_matches_nothing_gives_nothing_and_says_which(searcher):
    r = search_response(searcher, "社会保险", filters=Filters.make(source="人社局", after="2030-01-01"))
    assert r.hits == [] and r.empty_because == "no document matches after 2030-01-01"
    r = search_response(searcher, "社会保险", filters=Filters.make(source="财政局", folder="2021/人社"))
    assert r.hits == [] and "together" in r.empty_because
    assert search_response(searcher, "社会保险", filters=Filters.make(source="无此来源")).to_dict()["empty_because"]


def test_facets_count_the_documents_the_hits_were_ranked_from(searcher):
    f = Filters.make(folder="2022")
    r = search_response(searcher, "通知", k=5, mode="lexical", filters=f, facets=True)
    hits, ranked = searcher.search_ranked("通知", k=5, mode="lexical", filters=f)
    assert len(ranked) > len(hits) and {h.doc_id for h in hits} <= set(ranked)
    assert r.facets == facet_counts([searcher.doc_by_id[d] for d in ranked], f)
    assert set(r.facets["folder"]) <= {"人社", "其他"}  # one level below the folder filtered by
    assert sum(r.facets["type"].values()) == len(set(ranked))  # documents, each once
    assert set(r.facets["year"]) <= {"2022", "无日期"}
    assert len(r.hits) == 5  # the hits are those of the search without facets
    plain = search_response(searcher, "通知", k=5, mode="lexical", filters=f)
    assert [h.id for h in plain.hits] == [h.id for h in r.hits] and plain.facets is None


# ---------------------------------------------------------------------------- front ends


def test_cli_filters_facets_and_one_line_errors(library):
    docs, index = library
    run = CliRunner().invoke
    r = run(cli, ["search", "社会保险", "--json", "--source", "人社局", "--type", "md", "--facets", "--index",
                  str(index)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["filters"] == {"source": ["人社局"], "type": ["md"]} and out["hits"]
    assert list(out["facets"]["type"]) == ["md"] and list(out["facets"]["source"]) == ["人社局"]
    bad = run(cli, ["search", "社会保险", "--after", "昨天", "--index", str(index)])
    assert bad.exit_code == 2 and "--after" in bad.output and "is not a date" in bad.output
    none = run(cli, ["search", "社会保险", "--after", "2030", "--index", str(index)])
    assert none.exit_code == 0 and "no results: no document matches after 2030-01-01" in none.output
    text = run(cli, ["search", "社会保险", "--facets", "--index", str(index)])
    assert "来源:" in text.output and "年份:" in text.output
    pid = out["hits"][0]["id"]
    near = json.loads(run(cli, ["related", pid, "--json", "--source", "财政局", "--index", str(index)]).output)
    s = Searcher.load(index)
    assert near["hits"] and all(s.doc_by_id[h["doc_id"]]["meta"]["source"] == "财政局" for h in near["hits"])


def test_api_filters_in_the_query_and_in_a_body(library):
    from fastapi.testclient import TestClient

    from kb.serve.api import create_app

    api = TestClient(create_app(library[1], embedder=HashEmbedder(64)))
    got = api.get("/search", params={"q": "社会保险", "source": ["人社局", "财政局"], "after": "2023", "facets": True})
    assert got.status_code == 200
    body = got.json()
    assert body["filters"] == {"source": ["人社局", "财政局"], "after": "2023-01-01"} and "facets" in body
    posted = api.post("/search", json={"q": "社会保险", "filters": {"source": ["人社局", "财政局"], "after": "2023"},
                                       "facets": True})
    assert posted.status_code == 200 and posted.json() == body
    for bad, field in (({"after": "2024-02-31"}, "after"), ({"type": ["exe"]}, "type")):
        r = api.get("/search", params={"q": "社会保险", **bad})
        assert r.status_code == 422 and field in r.json()["detail"], r.json()
    r = api.post("/search", json={"q": "社会保险", "filters": {"colour": ["red"]}})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    empty = api.get("/search", params={"q": "社会保险", "folder": "1999"})
    assert empty.json()["hits"] == [] and empty.json()["empty_because"] == "no document matches folder 1999"


def test_mcp_search_takes_the_same_filters(library):
    pytest.importorskip("mcp")
    from kb.search.live import LiveSearcher
    from kb.serve.mcp import build_server

    server = build_server(library[1], LiveSearcher(library[1], embedder=HashEmbedder(64)))
    result = asyncio.run(server.call_tool("search", {"question": "社会保险", "k": 5, "facets": True,
                                                     "filters": {"source": ["医保局"], "type": ["txt"]}}))
    out = json.loads(result.content[0].text)
    s = Searcher.load(library[1])
    assert out["passages"] and all(s.doc_by_id[p["doc_id"]]["meta"]["source"] == "医保局" for p in out["passages"])
    assert out["filters"] == {"source": ["医保局"], "type": ["txt"]} and "facets" in out


@pytest.mark.milvus
def test_milvus_answers_every_filter_as_the_local_store(library, tmp_path):
    pytest.importorskip("milvus_lite")
    from kb.store.milvus.library import release

    docs, index = library
    db = str(tmp_path / "kb.db")
    update_index(docs, db, embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
    try:
        local = Searcher.load(index, embedder=HashEmbedder(64))
        milvus = Searcher.load(db, embedder=HashEmbedder(64))
        for values in ({"source": ["人社局"]}, {"folder": ["2022"]}, {"type": ["md"], "after": "2022"},
                       {"tag": ["社保"], "before": "2023-06-30"}, {"source": ["财政局"], "folder": ["2021/人社"]}):
            f = Filters.make(**values)
            for mode in ("hybrid", "lexical", "dense"):
                a = [(h.id, round(h.score, 5)) for h in local.search("社会保险缴费", k=10, mode=mode, filters=f)]
                b = [(h.id, round(h.score, 5)) for h in milvus.search("社会保险缴费", k=10, mode=mode, filters=f)]
                assert a == b, (values, mode)
            assert (search_response(local, "社会保险", filters=f, facets=True).facets
                    == search_response(milvus, "社会保险", filters=f, facets=True).facets)
    finally:
        release(db)
