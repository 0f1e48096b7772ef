"""The storage contract (kb.store.base): every store answers every read with the same shapes
and the same meaning. Each test runs on the local store and on Milvus Lite, over the same
small library; the last ones compare the two stores' answers with each other."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kb.embed.embedders import HashEmbedder
from kb.errors import IndexNotFound, KBError
from kb.index import update_index
from kb.rank.fusion import RankingConfig
from kb.store import open_store
from kb.store.base import CHILD_FIELDS, LEVEL_FIELDS, OUTLINE_FIELDS, PassageRow, Snapshot
from kb.text.process import tokenize

from .conftest import SAMPLE_DOC

K1, B = RankingConfig().bm25_k1, RankingConfig().bm25_b
EXTRA = {
    "notice.md": "# 关于加强差旅费报销管理的通知\n\n来源：财务处\n\n## 一、总体要求\n\n各单位要严格执行差旅费报销制度。"
                 "一要按标准乘坐交通工具；二要按规定住宿；三要及时报销，不得拖延。\n\n## 二、报销流程\n\n"
                 "（一）填写报销单。报销人填写差旅费报销单并附票据。\n\n（二）部门审核。部门负责人审核后交财务处。\n",
    "rice.txt": "水稻育种\n\n来源：农科院\n\n杂交水稻的育种方法包括三系法和两系法。两系法利用光温敏核不育系。\n",
}


def _where(kind: str, folder) -> str:
    return str(folder / ("index" if kind == "local" else "kb.db"))


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract") / "docs"
    folder.mkdir()
    shutil.copy(SAMPLE_DOC, folder / SAMPLE_DOC.name)
    for name, text in EXTRA.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def libraries(docs):
    """The same documents in each store, built when a test first asks: {kind: location}."""
    built: dict[str, str] = {}

    def location(kind: str) -> str:
        if kind not in built:
            if kind == "milvus" and not _milvus_available():
                pytest.skip("pymilvus / milvus-lite not installed")
            built[kind] = _where(kind, docs.parent)
            update_index(docs, built[kind], embedder=HashEmbedder(64), progress=False, warn=lambda m: None)
        return built[kind]

    yield location
    if "milvus" in built:
        from kb.store.milvus.library import release

        release(built["milvus"])


def _milvus_available() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


KINDS = ["local", pytest.param("milvus", marks=pytest.mark.milvus)]


@pytest.fixture(params=KINDS)
def snap(request, libraries) -> Snapshot:
    s = open_store(libraries(request.param)).snapshot()
    yield s
    s.close()


def _all_rows(s: Snapshot) -> dict[int, PassageRow]:
    ids = [p["id"] for d in s.docs for p in s.outline(d["doc_id"])]
    return {r["row"]: r for r in s.by_ids(ids).values()}


def _doc(s: Snapshot, name: str) -> str:
    return next(d["doc_id"] for d in s.docs if d["path"] == name)


def test_the_live_version_is_the_snapshots(libraries, snap):
    store = open_store(snap.location)
    assert store.current_version() == snap.version == store.head().version
    assert not snap.is_stale()


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_location_has_no_version_and_says_so(tmp_path, kind):
    if kind == "milvus" and not _milvus_available():
        pytest.skip("pymilvus / milvus-lite not installed")
    store = open_store(_where(kind, tmp_path))
    assert store.current_version() is None
    with pytest.raises(IndexNotFound, match="kb index"):
        store.snapshot()


def test_documents_and_passages_have_one_shape(snap):
    assert sorted(d["path"] for d in snap.docs) == sorted([SAMPLE_DOC.name, *EXTRA])
    assert all(isinstance(d["meta"], dict) and snap.doc_by_id[d["doc_id"]] is d for d in snap.docs)
    rows = _all_rows(snap)
    assert len(rows) == snap.n_live == sum(d["n_passages"] for d in snap.docs) == sum(snap.passage_kinds().values())
    for row, p in rows.items():
        assert set(p) == set(PassageRow.__annotations__) and p["row"] == row
        assert isinstance(p["heading_path"], list) and p["heading_path"][0]
        assert p["parent"] is None or p["parent"] in {q["id"] for q in rows.values()}
        assert snap.doc_text(p["doc_id"])[p["start"]: p["end"]] == p["text"]
    picked = list(rows)[:5]
    assert snap.rows(picked) == {r: rows[r] for r in picked}
    assert snap.rows([]) == {} and snap.by_ids(["nope:1"]) == {}


def test_a_documents_levels_children_and_outline(snap):
    doc = _doc(snap, "notice.md")
    outline = snap.outline(doc)
    assert [set(p) for p in outline] == [set(OUTLINE_FIELDS)] * len(outline)
    top = snap.level(doc, None)
    assert top and all(set(p) == set(LEVEL_FIELDS) for p in top)
    assert [p["id"] for p in top] == [p["id"] for p in outline if p["parent"] is None]
    parent = next(p for p in outline if any(q["parent"] == p["id"] for q in outline))
    children = snap.children(doc, parent["id"])
    assert [c["id"] for c in children] == [q["id"] for q in outline if q["parent"] == parent["id"]]
    assert all(set(c) == set(CHILD_FIELDS) and isinstance(c["heading_path"], list) for c in children)
    assert {c["id"] for c in children} <= snap.descendants(doc, parent["id"])
    assert [p["id"] for p in snap.level(doc, parent["id"])] == [c["id"] for c in children]


def test_dense_finds_a_passage_by_its_own_vector_and_obeys_a_filter(snap):
    rows = _all_rows(snap)
    row = next(r for r, p in rows.items() if "杂交水稻" in p["text"])
    vec = snap.vectors([row])[0]
    assert snap.vectors([row, row]).shape == (2, snap.dim) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    found, cos = snap.dense(vec, 3)
    assert int(found[0]) == row and cos[0] == pytest.approx(1.0, abs=1e-4) and list(cos) == sorted(cos, reverse=True)
    only = frozenset({_doc(snap, "notice.md")})
    found, _ = snap.dense(vec, 50, only)
    assert len(found) and all(rows[int(r)]["doc_id"] in only for r in found)
    assert len(snap.dense(vec, 5, frozenset())[0]) == 0


def test_bm25_ranks_what_holds_the_words_and_scores_rows_alike(snap):
    rows = _all_rows(snap)
    tokens = tokenize("差旅费报销")
    top, scores = snap.bm25_top(tokens, K1, B, 10)
    assert len(top) and "差旅" in rows[int(top[0])]["text"] and list(scores) == sorted(scores, reverse=True)
    assert snap.bm25_of(tokens, K1, B, top.tolist()) == pytest.approx(dict(zip(top.tolist(), scores.tolist())))
    unrelated = next(r for r, p in rows.items() if "水稻" in p["text"])
    assert snap.bm25_of(tokens, K1, B, [unrelated])[unrelated] == 0.0
    only = frozenset({_doc(snap, "rice.txt")})
    assert len(snap.bm25_top(tokens, K1, B, 10, only)[0]) == 0
    assert snap.idf("差旅费") > 0 and snap.has_term("差旅费")
    assert snap.idf("从未出现的词") == 0.0 and not snap.has_term("从未出现的词")


def test_the_calibration_sample_and_the_description(snap):
    assert snap.sample_vectors().shape == (min(512, snap.n_live), snap.dim)
    described = snap.describe()
    assert {"index", "vector_index", "segments", "vocabulary", "size_bytes", "format_version"} <= set(described)
    assert described["vocabulary"] > 0


@pytest.mark.milvus
def test_both_stores_answer_alike(libraries):
    local, milvus = (open_store(libraries(k)).snapshot() for k in ("local", "milvus"))
    try:
        by_id = {kind: {p["id"]: p for p in _all_rows(s).values()} for kind, s in (("l", local), ("m", milvus))}
        assert by_id["l"].keys() == by_id["m"].keys()
        assert all({**by_id["l"][i], "row": 0} == {**by_id["m"][i], "row": 0} for i in by_id["l"])
        tokens = tokenize("部门负责人审核报销单")
        ids = {}
        for kind, s in (("l", local), ("m", milvus)):
            rows, scores = s.bm25_top(tokens, K1, B, 5)
            got = s.rows(rows.tolist())
            ids[kind] = [(got[int(r)]["id"], round(float(x), 4)) for r, x in zip(rows, scores)]
        assert ids["l"] == ids["m"]
        def as_set(sample):  # the same passages' vectors; the order is each store's own
            return sorted(map(tuple, np.round(sample, 5).tolist()))

        assert as_set(local.sample_vectors()) == as_set(milvus.sample_vectors())
        assert local.idf("报销") == pytest.approx(milvus.idf("报销"))
    finally:
        local.close()
        milvus.close()


@pytest.mark.milvus
def test_milvus_refuses_bm25_parameters_it_was_not_weighted_with(libraries):
    s = open_store(libraries("milvus")).snapshot()
    try:
        assert s.bm25_written == (K1, B)
        with pytest.raises(KBError, match="k1=2.0"):
            s.bm25_top(tokenize("报销"), 2.0, B, 5)
    finally:
        s.close()
