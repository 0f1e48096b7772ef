from __future__ import annotations

import json

import pytest

from kb.read.documents import parse_document, read_document
from kb.split.passages import HeadingStack, chunk_spans, find_points, heading_label, heading_match, split_document

from .conftest import SAMPLE_DOC
from .golden import GOLDEN, SPLITTING_INPUTS, split_json

GOLDEN_INPUTS = sorted(SPLITTING_INPUTS.glob("*.txt")) + sorted(SPLITTING_INPUTS.glob("*.md"))

SECTIONS = 4  # the sample's 一、…四、, each with three sub-points (its passages are in the golden file)


@pytest.fixture(scope="module")
def sample():
    doc = read_document(SAMPLE_DOC, SAMPLE_DOC.parent)
    return doc, split_document(doc)


@pytest.mark.parametrize("source", GOLDEN_INPUTS, ids=[p.name for p in GOLDEN_INPUTS])
def test_documents_split_as_their_golden_files(source):
    """Input document -> passages with heading paths, as reviewed in
    tests/golden/splitting/*.json (rewrite them with `python -m tests.golden`)."""
    expected = json.loads(source.with_suffix(source.suffix + ".json").read_text(encoding="utf-8"))
    assert json.loads(split_json(source)) == expected


def test_the_golden_sample_is_the_shipped_sample():
    assert (GOLDEN / "splitting" / "sample.txt").read_bytes() == SAMPLE_DOC.read_bytes()


def test_sub_points_sit_inside_their_paragraphs(sample):
    doc, passages = sample
    points = [p for p in passages if p.kind == "point"]
    assert len(points) == 3 * SECTIONS
    for p in points:
        assert p.text.startswith(p.heading_path[-1])
        parent = next(q for q in passages if q.id == p.parent)
        assert parent.kind == "paragraph" and p.text in parent.text
        assert parent.heading_path == p.heading_path[:-1]


def test_passage_offsets_point_into_normalised_and_original_text(sample):
    doc, passages = sample
    for p in passages:
        assert doc.text[p.start:p.end] == p.text
        orig = doc.original[p.orig_start:p.orig_end]
        assert orig.replace("\xa0", " ").split() == p.text.split() or orig == p.text


def test_ids_are_unique_and_stable(sample):
    doc, passages = sample
    assert len({p.id for p in passages}) == len(passages)
    assert [p.id for p in split_document(doc)] == [p.id for p in passages]


@pytest.mark.parametrize("line, kind", [
    ("一、总体要求", "cn"), ("（二）工作目标", "cn_paren"), ("(三)保障措施", "cn_paren"), ("1. 加强领导", "num"),
    ("2、明确责任", "num"), ("（1）细化分工", "num_paren"), ("第一章 总则", "chapter"), ("第三节 范围", "section"),
    ("第十二条 本办法自发布之日起施行。", "article"), ("## 小节", "md"),
])
def test_heading_families(line, kind):
    assert heading_match(line).kind == kind


@pytest.mark.parametrize("line", ["1.5米高的墙", "2024年工作总结", "一要勤于学习。", "普通的一句话。"])
def test_not_headings(line):
    assert heading_label(line) is None


def test_long_numbered_line_takes_its_first_clause_as_heading():
    hm, label, standalone = heading_label("（一）加强组织领导。各地要高度重视，把这项工作摆上重要议事日程，" * 2)
    assert label == "（一）加强组织领导" and not standalone


def test_heading_stack_nests_and_closes():
    st = HeadingStack()
    for line in ["第一章 总则", "一、目标", "（一）近期", "（二）远期", "二、任务", "第二章 附则"]:
        hm, label, _ = heading_label(line)
        st.push(hm, label)
        if line == "（二）远期":
            assert st.labels() == ["第一章 总则", "一、目标", "（二）远期"]
        if line == "二、任务":
            assert st.labels() == ["第一章 总则", "二、任务"]
    assert st.labels() == ["第二章 附则"]
    md = HeadingStack()
    for line in ["# A", "## B", "### C", "## D"]:
        hm, label, _ = heading_label(line)
        md.push(hm, label)
    assert md.labels() == ["A", "D"]


@pytest.mark.parametrize("text, labels", [
    ("总的要求是：一是加强学习，提高素质；二是改进作风；三是严守纪律。",
     ["一是加强学习", "二是改进作风", "三是严守纪律"]),
    ("首先，要统一思想。其次，要明确任务。最后，要抓好落实。",
     ["首先，要统一思想", "其次，要明确任务", "最后，要抓好落实"]),
    ("第一，提高认识；第二，健全制度。", ["第一，提高认识", "第二，健全制度"]),
    ("具体包括：①制定方案；②组织实施；③总结评估。", ["①制定方案", "②组织实施", "③总结评估"]),
    ("一要勤于学习。内容。二要精于思考。内容。", ["一要勤于学习", "二要精于思考"]),
])
def test_inline_enumerations(text, labels):
    assert [label for _, _, label in find_points(text)] == labels


def test_enumeration_needs_two_items_in_order_at_clause_starts():
    assert find_points("只有一要点。") == []
    assert find_points("坚持统一要求，做到二是二。") == []
    assert find_points("二要先说。一要后说。") == []


def test_outermost_enumeration_wins():
    text = "一要学习。一是读书，二是思考。二要实践。"
    assert [label for _, _, label in find_points(text)] == ["一要学习", "二要实践"]


def test_long_units_are_chunked_at_sentence_ends():
    sentence = "这是一个用于测试切分的句子，长度大约二十个字。"
    text = sentence * 60
    spans = chunk_spans(text, 0, len(text), max_chars=200)
    assert all(e - s <= 200 for s, e in spans)
    assert all(text[e - 1] == "。" for s, e in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # a sentence with no end at all is still cut
    spans = chunk_spans("字" * 1000, 0, 1000, max_chars=300)
    assert all(e - s <= 300 for s, e in spans) and spans[-1][1] == 1000


def test_long_paragraph_becomes_parent_of_chunks():
    body = "这是一个很长的段落中的句子，用来测试。" * 80
    doc = parse_document(f"标题\n\n{body}".encode(), "long.txt")
    passages = split_document(doc, max_chars=300)
    para = next(p for p in passages if p.kind == "paragraph")
    chunks = [p for p in passages if p.kind == "chunk"]
    assert len(chunks) >= 5 and all(c.parent == para.id and len(c.text) <= 300 for c in chunks)
    assert "".join(c.text for c in chunks) == para.text


def test_a_hash_line_is_a_heading_in_markdown_and_text_in_plain_text():
    body = "软件包维护\n\n# 安装\n\n修复中断的安装：\n\n# dpkg --configure -a\n\n然后重新运行安装命令。"
    md = split_document(parse_document(body.encode(), "faq.md"))
    assert any(p.heading_path[1:] == ["dpkg --configure -a"] for p in md)  # Markdown: a heading, as written
    txt = split_document(parse_document(body.encode(), "faq.txt"))
    assert all(len(p.heading_path) == 1 for p in txt)  # plain text: no section named after a command
    assert any("# dpkg --configure -a" in p.text for p in txt) and any("# 安装" in p.text for p in txt)


def test_a_hash_line_inside_pre_is_code_and_the_pages_headings_stay_headings():
    page = ("<html><body><h1>软件包维护</h1><h2>修复安装</h2><p>中断的安装可以这样修复：</p>"
            "<pre># dpkg --configure -a\n# apt-get install -f</pre><p>然后重新运行安装命令。</p>"
            "<h2>清理</h2><p>删除旧的软件包。</p></body></html>")
    doc = parse_document(page.encode(), "manual.html")
    passages = split_document(doc)
    paths = {tuple(p.heading_path[1:]) for p in passages}
    assert paths <= {(), ("修复安装",), ("清理",)}, paths  # no section named after a command
    text = " ".join(p.text for p in passages)
    assert "# dpkg --configure -a" in text and "# apt-get install -f" in text
    assert any(p.heading_path[1:] == ["清理"] for p in passages)


def test_a_pages_title_heading_after_its_navigation_is_not_a_section_of_itself():
    page = ("<html><head><title>第 2 章 开始之前</title></head><body><div>上一页 下一页</div>"
            "<h1>第 2 章 开始之前</h1><h2>2.1 选择软件包</h2><p>首先要选择一个软件包，这里说明怎样选择。</p>"
            "<h2>2.2 设置环境</h2><p>设置两个环境变量。</p></body></html>")
    passages = split_document(parse_document(page.encode(), "ch2.html"))
    paths = [p.heading_path for p in passages if "软件包" in p.text or "环境变量" in p.text]
    assert paths == [["第 2 章 开始之前", "2.1 选择软件包"], ["第 2 章 开始之前", "2.2 设置环境"]]
