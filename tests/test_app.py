"""The page, in-process through streamlit.testing.v1.AppTest: every flow and state."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kb.search.searcher import Searcher

from .conftest import ROOT, SAMPLE_DOC, library_with, run_page

APP = str(ROOT / "app.py")
HOSTILE = ("恶意文档\n\n来源：测试站\n\n"
           "正文里有<script>alert('x')</script>和<img src=x onerror=alert(1)>两个陷阱，用来测试转义。")


app = run_page


def param(at: AppTest, key: str) -> str:
    value = at.query_params[key]
    return value[0] if isinstance(value, list) else value


def cards(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if 'class="kb-card"' in m.value]


@pytest.fixture(autouse=True)
def _local_page(page_address):
    """The page as `make run` serves it: on 127.0.0.1."""


@pytest.fixture
def kb_folder(tmp_path) -> tuple[Path, Path]:
    """Two documents (the sample and a hostile one), indexed with the hash embedder."""
    return library_with(tmp_path, {"evil.txt": HOSTILE})


def test_search_shows_cards_citation_and_puts_the_query_in_the_url(sample_index, monkeypatch):
    at = app(sample_index, monkeypatch)
    assert not at.exception
    at.text_input(key="q_input").input("由被动式服务向主动服务转变").run()
    assert not at.exception
    assert param(at, "q") == "由被动式服务向主动服务转变"
    first = cards(at)[0]
    assert "一要树立全新的服务理念" in first and '<mark class="kb-term">' in first and "kb-best" in first
    assert "相关度" in first and "语义" in first and "关键词" in first
    assert at.code[0].value.startswith("董清河（中共河北省蔚县县委常委、组织部长）. 《对生活失去信心的说说")
    assert "百度文库, 2024-07-11" in at.code[0].value and "二、坚持以人为本" in at.code[0].value


def test_a_shared_link_runs_its_search(sample_index, monkeypatch):
    at = app(sample_index, monkeypatch, q="建设马克思主义学习型政党有什么要求")
    assert not at.exception
    assert at.text_input(key="q_input").value == "建设马克思主义学习型政党有什么要求"
    assert "学习型政党" in cards(at)[0]


def test_related_passages_and_jumping_between_them(sample_index, monkeypatch):
    at = app(sample_index, monkeypatch, q="二要创新方法")
    rel = next(b for b in at.button if b.label == "相关段落")
    rel.click().run()
    assert not at.exception
    focus = param(at, "p")
    assert [s.value for s in at.subheader] == ["段落", "相关段落"]
    related_cards = cards(at)[1:]
    assert len(related_cards) == 6 and all(focus not in c for c in related_cards)
    # jump to a related passage: it becomes the focus, with its own related list
    next(b for b in at.button if b.label == "相关段落").click().run()
    new_focus = param(at, "p")
    assert new_focus != focus and not at.exception
    # back to the results
    next(b for b in at.button if b.label == "← 返回搜索结果").click().run()
    assert "p" not in at.query_params and cards(at)


def test_document_view_highlights_the_passage_with_context_and_metadata(sample_index, monkeypatch):
    at = app(sample_index, monkeypatch, q="二要创新方法")
    next(b for b in at.button if b.label == "查看全文").click().run()
    assert not at.exception
    page = "\n".join(m.value for m in at.markdown)
    assert '<div class="kb-title">对生活失去信心的说说' in page
    assert "作者：董清河（中共河北省蔚县县委常委、组织部长）" in page and "来源：百度文库" in page
    assert '<span class="kb-focus">二要创新方法。' in page
    assert "一要创新理念。" in page and "三要创新机制。" in page  # neighbours as context
    assert '<mark class="kb-focus-inline">二要创新方法。' in page  # and in the full text
    assert "二要创新方法" in at.code[0].value


def test_filters_by_document_and_source(kb_folder, monkeypatch):
    corpus, index = kb_folder
    s = Searcher.load(index)
    evil = next(d["doc_id"] for d in s.docs if d["path"] == "evil.txt")
    at = app(index, monkeypatch, q="测试")
    assert any("恶意文档" in c for c in cards(at))
    at.sidebar.multiselect(key="f_source").set_value(["百度文库"]).run()
    assert cards(at) and all("恶意文档" not in c for c in cards(at))
    assert param(at, "source") == "百度文库"  # the filtered search is in the URL, to share
    at.sidebar.multiselect(key="f_source").set_value([]).run()
    at.sidebar.multiselect(key="f_in").set_value([evil]).run()
    assert cards(at) and all("恶意文档" in c for c in cards(at))


def test_a_shared_filtered_link_narrows_and_shows_counts(kb_folder, monkeypatch):
    corpus, index = kb_folder
    at = app(index, monkeypatch, q="测试", source="测试站")
    assert not at.exception
    assert cards(at) and all("恶意文档" in c for c in cards(at))
    assert at.sidebar.multiselect(key="f_source").value == ["测试站"]
    facets = next(m.value for m in at.markdown if 'class="kb-facets"' in m.value)
    assert "类型" in facets and "txt" in facets
    nothing = app(index, monkeypatch, q="测试", after="2030-01-01")
    said = [i.value for i in nothing.info]
    assert not cards(nothing) and any("没有符合筛选条件的文档：没有 2030-01-01 以后的文档" in v for v in said)
    no_md = app(index, monkeypatch, q="测试", source="测试站", type="md")
    assert any("没有类型为“md”的文档" in i.value for i in no_md.info)
    sample = next(d["doc_id"] for d in Searcher.load(index).docs if d["path"] == SAMPLE_DOC.name)
    together = app(index, monkeypatch, **{"q": "测试", "source": "测试站", "in": sample})
    assert any("没有同时符合来源、文档这些条件的文档" in i.value for i in together.info)
    bad = app(index, monkeypatch, q="测试", after="昨天")
    assert any("筛选条件无效" in w.value for w in bad.sidebar.warning) and cards(bad)


def test_a_tagged_link_shows_the_tags_on_the_card(tmp_path, monkeypatch):
    note = "---\ntags: [社保, 民生]\ndate: 2024-03-05\n---\n\n缴费通知\n\n来源：人社局\n\n今年的缴费基数已经公布。"
    corpus, index = library_with(tmp_path, {"note.md": note})
    at = app(index, monkeypatch, q="缴费基数", tag="社保")
    assert not at.exception and at.sidebar.multiselect(key="f_tag").value == ["社保"]
    shown = [html.unescape(c) for c in cards(at)]
    assert shown and all("标签 社保、民生" in c and "来源 人社局" in c and "2024-03-05" in c for c in shown)


def test_mode_and_number_of_results(sample_index, monkeypatch):
    at = app(sample_index, monkeypatch, q="服务")
    at.sidebar.slider(key="k").set_value(3).run()
    assert len(cards(at)) == 3
    at.sidebar.radio(key="mode").set_value("关键词").run()
    assert all("关键词 0.00" not in c for c in cards(at))


def test_hostile_document_text_is_escaped(kb_folder, monkeypatch):
    corpus, index = kb_folder
    at = app(index, monkeypatch, q="转义 陷阱")
    card = next(c for c in cards(at) if "恶意文档" in c)
    assert "<script" not in card and "<img" not in card
    assert "&#60;script&#62;" in card and "<script>alert('x')</script>" in html.unescape(card)
    next(b for b in at.button if b.label == "查看全文").click().run()
    page = "\n".join(m.value for m in at.markdown)
    assert "<script" not in page and "<img" not in page and "&#60;script&#62;" in page


def test_empty_query_and_no_results(kb_folder, monkeypatch):
    corpus, index = kb_folder
    at = app(index, monkeypatch)
    assert not cards(at) and any("输入一个问题" in c.value for c in at.caption)
    at = app(index, monkeypatch, q="区块链 量子纠缠")
    at.sidebar.radio(key="mode").set_value("关键词").run()
    assert not cards(at) and any("没有找到相关段落" in i.value for i in at.info)


@pytest.mark.slow  # the page indexes with the default model
def test_no_index_builds_from_a_folder_and_reports_failed_files(tmp_path, monkeypatch):
    folder = tmp_path / "mydocs"
    folder.mkdir()
    shutil.copy(SAMPLE_DOC, folder / "a.txt")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    index = tmp_path / "fresh-index"
    monkeypatch.setenv("KB_LIBRARY_ROOTS", str(tmp_path))  # the operator opens this folder to the page
    at = app(index, monkeypatch)
    assert any("还没有索引" in i.value for i in at.info)
    assert any(b.label == "用示例语料建立索引" for b in at.button)
    at.text_input(key="folder_input").input(str(folder)).run()
    next(b for b in at.button if b.label == "建立索引").click().run()
    assert not at.exception
    assert (index / "CURRENT").exists()
    assert any("broken.pdf" in html.unescape(w.value) for w in at.sidebar.warning)  # the file that failed
    assert any("1 added" in s.value for s in at.sidebar.success)
    at.text_input(key="q_input").input("学习型政党").run()
    assert cards(at)


def test_remove_a_document(kb_folder, monkeypatch):
    corpus, index = kb_folder
    s = Searcher.load(index)
    evil = next(d["doc_id"] for d in s.docs if d["path"] == "evil.txt")
    at = app(index, monkeypatch)
    at.sidebar.selectbox(key="remove_doc").set_value(evil).run()
    button = next(b for b in at.sidebar.button if b.label == "移出知识库")
    assert button.disabled  # needs the confirmation first
    at.sidebar.checkbox(key="remove_confirm").check().run()
    next(b for b in at.sidebar.button if b.label == "移出知识库").click().run()
    assert not at.exception
    assert not (corpus / "evil.txt").exists() and list((corpus / ".kb-trash").rglob("evil.txt"))
    assert [d["path"] for d in Searcher.load(index).docs] == [SAMPLE_DOC.name]


def test_the_dictionary_and_synonyms_are_edited_on_the_page(kb_folder, monkeypatch):
    corpus, index = kb_folder
    at = app(index, monkeypatch, q="测试转义")
    at.sidebar.text_area(key="vocab_words").input("测试转义\n坏 行 有 太多")  # a form: sent on submit
    at.sidebar.text_area(key="vocab_synonyms").input("陷阱, 圈套")
    next(b for b in at.sidebar.button if b.label == "保存并更新索引").click().run()
    assert not at.exception
    assert (corpus / ".kb" / "words.txt").read_text(encoding="utf-8") == "测试转义\n"  # the usable lines
    assert (corpus / ".kb" / "synonyms.txt").read_text(encoding="utf-8") == "陷阱, 圈套\n"
    assert any("词典 line 2" in w.value for w in at.sidebar.warning)
    assert any("1 re-tokenised" in html.unescape(s.value) for s in at.sidebar.success)
    s = Searcher.load(index)
    assert s.vocabulary.describe()["words"] == 1 and s.vocabulary.describe()["synonyms"] == 1
    assert at.sidebar.text_area(key="vocab_words").value == "测试转义"  # what the index now keeps


def test_unknown_passage_in_the_url_is_a_clear_error(sample_index, monkeypatch):
    at = app(sample_index, monkeypatch, p="nope:1")
    assert not at.exception and any("no passage with id" in e.value for e in at.error)
    assert all(str(sample_index) not in e.value for e in at.error)  # no server path


def test_index_folder_from_the_command_line(kb_folder, monkeypatch):
    """streamlit run app.py -- --index DIR (sys.argv), which wins over KB_INDEX."""
    corpus, index = kb_folder
    monkeypatch.setenv("KB_INDEX", "/nonexistent")
    monkeypatch.setattr("sys.argv", ["app.py", "--index", str(index)])
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["q"] = "陷阱"
    at.run()
    assert not at.exception and any("恶意文档" in c for c in cards(at))


def test_citation_style_selector_and_export(kb_folder, monkeypatch):
    corpus, index = kb_folder
    at = app(index, monkeypatch, q="组工干部 服务理念")
    assert at.code[0].value.startswith("董清河（中共河北省蔚县县委常委、组织部长）. 《")  # the short form by default
    at.selectbox(key="cite_style").set_value("GB/T 7714-2015").run()
    assert not at.exception
    gbt = at.code[0].value
    assert gbt.startswith("董清河. 对生活失去信心的说说") and "[Z]. 百度文库, 2024-07-11." in gbt
    at.selectbox(key="cite_style").set_value("APA 第7版").run()
    assert at.code[0].value.startswith("董清河. (2024, July 11). ")
    boxes = [c for c in at.checkbox if c.key and c.key.startswith("sel-")]
    assert boxes and all(not c.value for c in boxes)
    boxes[0].check().run()
    assert not at.exception


def test_search_within_one_document_from_its_card(kb_folder, monkeypatch):
    corpus, index = kb_folder
    evil = next(d["doc_id"] for d in Searcher.load(index).docs if d["path"] == "evil.txt")
    at = app(index, monkeypatch, q="测试", doc=evil)
    at.button(key="search_in_doc").click().run()
    assert not at.exception
    assert param(at, "in") == evil and "doc" not in at.query_params
    assert cards(at) and all("恶意文档" in c for c in cards(at))
