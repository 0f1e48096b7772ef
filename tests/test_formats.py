"""PowerPoint, Excel and EPUB, with fixtures written in-process by the same libraries:
slides, sheets and chapters become headings, so their numbers and names reach every
passage's section path and citation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from kb.errors import DocumentError
from kb.read.documents import MAX_UNZIPPED_BYTES, parse_document
from kb.split.passages import split_document


def pptx_bytes(slides: list[tuple[str, list[str], str]]) -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for title, lines, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text_frame.text = "\n".join(lines)
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    pictures_only = deck.slides.add_slide(deck.slide_layouts[6])
    pictures_only.shapes.add_shape(1, Inches(1), Inches(1), Inches(1), Inches(1))
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


def test_pptx_slides_are_headings_with_notes():
    raw = pptx_bytes([("工作总结", ["一、主要成绩", "全年完成了各项任务。"], ""),
                      ("下一步计划", ["一是加强学习，提高素质；二是改进作风，服务群众。"], "讲到这里强调落实。")])
    doc = parse_document(raw, "report.pptx")
    assert doc.title == "工作总结" and doc.format == "pptx"
    passages = split_document(doc)
    paths = {tuple(p.heading_path[1:]) for p in passages}
    assert ("第2张幻灯片：下一步计划",) in paths
    points = [p for p in passages if p.kind == "point"]
    assert [p.heading_path[-1] for p in points] == ["一是加强学习", "二是改进作风"]
    assert points[0].heading_path[1] == "第2张幻灯片：下一步计划"
    assert any("备注：讲到这里强调落实" in p.text for p in passages)


def test_a_pptx_with_only_pictures_is_skipped():
    from pptx import Presentation

    deck = Presentation()
    deck.slides.add_slide(deck.slide_layouts[6])
    buf = io.BytesIO()
    deck.save(buf)
    with pytest.raises(DocumentError, match="no text on any slide"):
        parse_document(buf.getvalue(), "pictures.pptx")


def xlsx_bytes(rows_by_sheet: dict[str, list[list]]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in rows_by_sheet.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_xlsx_rows_carry_their_header_and_sheet():
    raw = xlsx_bytes({"预算": [["项目", "金额（万元）", "负责单位"], ["道路硬化", 120, "交通局"],
                               ["人居环境整治", 80.0, "农业农村局"], [None, None, None], ["合计", "=B2+B3", None]]})
    doc = parse_document(raw, "budget.xlsx")
    passages = split_document(doc)
    text = "\n".join(p.text for p in passages)
    assert "项目：道路硬化；金额（万元）：120；负责单位：交通局" in text
    assert "项目：人居环境整治；金额（万元）：80；负责单位：农业农村局" in text
    assert all(p.heading_path[1] == "工作表：预算" for p in passages if p.kind != "header")


def test_xlsx_with_a_million_empty_rows_is_capped():
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["名称", "数量"])
    ws.append(["苹果", 3])
    ws.cell(row=1_000_000, column=1, value="远处的一格")
    buf = io.BytesIO()
    wb.save(buf)
    doc = parse_document(buf.getvalue(), "sparse.xlsx")
    assert "名称：苹果；数量：3" in doc.text and "远处的一格" not in doc.text  # stopped after 1,000 empty rows


def epub_bytes(chapters: list[tuple[str, str]]) -> bytes:
    import tempfile

    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("kb-test")
    book.set_title("基层治理读本")
    book.set_language("zh")
    items = []
    for n, (title, body) in enumerate(chapters, 1):
        c = epub.EpubHtml(title=title, file_name=f"c{n}.xhtml", lang="zh")
        c.content = f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{body}</p></body></html>"
        book.add_item(c)
        items.append(c)
    book.toc = items
    book.spine = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    with tempfile.NamedTemporaryFile(suffix=".epub") as f:
        epub.write_epub(f.name, book)
        return open(f.name, "rb").read()


def test_epub_chapters_are_headings():
    raw = epub_bytes([("第一章 总则", "为了加强基层治理，制定本读本。"),
                      ("第二章 方法", "首先，要统一思想。其次，要明确任务。")])
    doc = parse_document(raw, "book.epub")
    assert doc.title == "基层治理读本"
    passages = split_document(doc)
    assert any(p.heading_path[1:] == ["第二章 方法", "其次，要明确任务"] for p in passages)
    assert any("为了加强基层治理" in p.text and p.heading_path[1:] == ["第一章 总则"] for p in passages)


def test_an_epub_chapters_pre_blocks_are_code_not_headings():
    raw = epub_bytes([("第一章 安装", "安装步骤如下：</p><pre># make install\n# make clean</pre><p>然后运行程序。"),
                      ("第二章 使用", "启动以后</p><pre># kb search 问题</pre><p>即可检索。")])
    passages = split_document(parse_document(raw, "book.epub"))
    assert {tuple(p.heading_path[1:]) for p in passages} <= {(), ("第一章 安装",), ("第二章 使用",)}
    text = "\n".join(p.text for p in passages)
    assert "# make install" in text and "# kb search 问题" in text
    assert any("即可检索" in p.text and p.heading_path[1:] == ["第二章 使用"] for p in passages)


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx", ".epub"])
def test_zip_bombs_and_corrupt_archives_are_refused_unread(suffix, monkeypatch):
    import kb.read.documents

    with pytest.raises(DocumentError, match="not a readable"):
        parse_document(b"PK\x03\x04 not really a zip", "broken" + suffix)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.xml", b"\0" * (2 * 1024 * 1024))
    monkeypatch.setattr(kb.read.documents, "MAX_UNZIPPED_BYTES", 1024 * 1024)
    with pytest.raises(DocumentError, match="unpacks to"):
        parse_document(buf.getvalue(), "bomb" + suffix)
    assert MAX_UNZIPPED_BYTES >= 100 * 1024 * 1024


def test_the_first_slide_sheet_and_chapter_keep_their_heading():
    deck = split_document(parse_document(pptx_bytes([("工作总结", ["全年完成了各项任务，成绩显著。"], "")]), "r.pptx"))
    assert any(p.heading_path[1:] == ["第1张幻灯片：工作总结"] and "全年完成" in p.text for p in deck)
    sheet = split_document(parse_document(xlsx_bytes({"预算": [["项目", "金额"], ["道路", 1]]}), "b.xlsx"))
    assert any(p.heading_path[1:] == ["工作表：预算"] and "项目：道路；金额：1" in p.text for p in sheet)
    book = split_document(parse_document(epub_bytes([("第一章 总则", "为了加强基层治理，制定本读本。")]), "b.epub"))
    assert any(p.heading_path[1:] == ["第一章 总则"] and "基层治理" in p.text for p in book)


FUZZ_CRASHES = sorted((Path(__file__).parent / "fixtures" / "fuzz").glob("*"))


@pytest.mark.parametrize("path", FUZZ_CRASHES, ids=[p.name for p in FUZZ_CRASHES])
def test_inputs_that_crashed_the_fuzzer_are_one_line_errors(path):
    """Found by `make fuzz` (zip archives whose directory claims an unsupported zip version)."""
    with pytest.raises(DocumentError, match="not a readable"):
        parse_document(path.read_bytes(), path.name)
