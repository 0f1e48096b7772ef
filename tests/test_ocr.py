"""Scans read offline by OCR: paragraphs rejoined from line geometry (golden files),
page locators and OCR marks on passages, hits and citations, the OCR cache, the
--ocr/--max-pages settings, and bad scans refused before they are decoded.

Fixtures are rendered in-process with a CJK font (tests/scans.py); the OCR engine is the
real one (RapidOCR, PP-OCRv6 models inside its wheel)."""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib

import pytest

from kb.errors import DocumentError
from kb.index import update_index
from kb.read import ocr
from kb.read.documents import ReadOptions, parse_document
from kb.read.locators import KEY, encode, locate
from kb.read.ocr import Line, rejoin
from kb.search.searcher import Searcher
from kb.split.passages import split_document

from .golden import NOTICE, OCR_INPUTS, rejoined
from .scans import cjk_font, pdf_of, png_of, render_pages

needs_font = pytest.mark.skipif(cjk_font() is None, reason="no CJK font (apt install fonts-wqy-zenhei)")


def text_image(lines: list[str], px: int = 28, width: int = 1000, indent: int = 0):
    """A small page: ``lines`` drawn one per visual line (fast to OCR)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(cjk_font(), px)
    height = int(40 * 2 + len(lines) * px * 1.7)
    im = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        draw.text((40 + (indent if i == 0 else 0), 40 + i * px * 1.7), line, font=font, fill=0)
    return im


@pytest.fixture
def count_ocr(monkeypatch):
    """Counts pages given to the engine (cache misses)."""
    calls = []
    real = ocr.recognize

    def counted(image):
        calls.append(image.size)
        return real(image)

    monkeypatch.setattr(ocr, "recognize", counted)
    return calls


# --------------------------------------------------------------------------- paragraphs (pure)


@pytest.mark.parametrize("source", sorted(OCR_INPUTS.glob("*.lines.json")), ids=lambda p: p.name.split(".")[0])
def test_rejoined_paragraphs_match_their_golden_file(source):
    expected = source.with_name(source.name.replace(".lines.json", ".txt")).read_text(encoding="utf-8")
    assert rejoined(source) == expected


def test_golden_notice_keeps_headings_and_sub_points_for_the_splitter():
    from kb.read.documents import parse_document as parse

    text = (OCR_INPUTS / "notice_no_indent.txt").read_text(encoding="utf-8")
    assert text.splitlines()[1:] == NOTICE  # every paragraph back, none merged or split, no page number
    passages = split_document(parse(text.encode(), "notice.txt"))
    assert [p.heading_path[1:] for p in passages if p.kind == "point"] == [
        ["一、精简文件会议", "一是能合并的会议坚决合并"], ["一、精简文件会议", "二是没有实质内容的文件一律不发"],
        ["一、精简文件会议", "三是提倡开短会、讲短话"]]


def L(x0, y0, x1, text, h=30):
    return Line(x0, y0, x1, y0 + h, text)


def test_rejoin_rules():
    lines = [
        L(100, 100, 900, "关于开展调研的通知"),  # centred title: short
        L(160, 200, 1100, "各单位：为了摸清基层负担的实际情况，经研究决定开展一次专题调"),  # indented first line
        L(100, 250, 1100, "研，现将有关事项通知如下。请各单位认真组织，按时报送材料，不得"),
        L(100, 300, 600, "敷衍了事。"),  # short last line: the paragraph ends
        L(100, 350, 1100, "一、调研内容包括文件会议、督查检查和考核评比等方面的实际情况，请"),  # heading marker
        L(100, 400, 1100, "逐项填写。"),
        L(560, 1540, 640, "- 1 -"),  # page number at the foot
    ]
    assert rejoin(lines, 1600).split("\n") == [
        "关于开展调研的通知",
        "各单位：为了摸清基层负担的实际情况，经研究决定开展一次专题调研，现将有关事项通知如下。请各单位认真组织，按时报送材料，不得敷衍了事。",
        "一、调研内容包括文件会议、督查检查和考核评比等方面的实际情况，请逐项填写。",
    ]
    # boxes on one visual line: a wide gap is a space; Latin words are not glued together
    row = [L(100, 100, 400, "来源:百度文库"), L(500, 102, 800, "编辑:中财网")]
    assert rejoin(row) == "来源:百度文库 编辑:中财网"
    wrapped = [L(100, 100, 1100, "the knowledge base"), L(100, 150, 1100, "finds passages")]
    assert rejoin(wrapped) == "the knowledge base finds passages"
    assert rejoin([]) == ""


def test_a_gap_where_a_line_could_be_gets_a_second_look(monkeypatch):
    from PIL import Image

    body = [L(100, 100 + 50 * i, 1100, f"第{i}行正文内容") for i in range(6)]
    missed = L(100, 350, 1100, "漏掉的一行")
    seen = body[:5]  # rows at 100..300; the next found row is 400: a line's room at 350
    seen.append(L(100, 400, 1100, "第6行正文内容"))
    calls = []

    def engine_pass(image):
        calls.append(image.getpixel((600, 115)))  # white on the second pass: found lines are masked
        return seen if len(calls) == 1 else [missed]

    monkeypatch.setattr(ocr, "recognize", engine_pass)
    page = Image.new("L", (1240, 1754), 0)
    lines = ocr.read_page(page)
    assert calls == [0, 255] and missed in lines
    assert rejoin(lines, 1754) == "".join(f"第{i}行正文内容" for i in range(5)) + "漏掉的一行第6行正文内容"
    calls.clear()
    assert ocr.read_page(page.copy()) and len(calls) == 2  # no cache: the engine again
    seen[:] = body  # evenly spaced: one pass
    calls.clear()
    ocr.read_page(page)
    assert len(calls) == 1
    assert not ocr.has_gap(body) and ocr.has_gap(body[:5] + [L(100, 400, 1100, "x")])


# --------------------------------------------------------------------------- engine


@needs_font
@pytest.mark.ocr
def test_the_engine_loads_and_reads_with_the_network_unreachable(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network is unreachable in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(ocr, "_engine", None)  # load the models again, offline
    text = rejoin(ocr.recognize(text_image(["坚持以人为本，争做热情服务的表率"])))
    assert text.replace(",", "，") == "坚持以人为本，争做热情服务的表率"


# --------------------------------------------------------------------------- PDFs and images


@needs_font
@pytest.mark.ocr
def test_a_scanned_pdf_becomes_passages_with_headings_page_locators_and_ocr_marks(tmp_path):
    pages, truth = render_pages(NOTICE, pt=26, title="关于进一步做好基层减负工作的通知", indent=False)
    assert len(pages) == 2
    doc = parse_document(pdf_of(pages), "notice.pdf")
    passages = split_document(doc)
    by_heading = {p.heading_path[1] if len(p.heading_path) > 1 else "": p for p in passages}
    assert {"一、精简文件会议", "二、规范督查检查", "三、工作要求"} <= set(by_heading)
    points = [p for p in passages if p.kind == "point"]
    assert [p.heading_path[-1][:2] for p in points] == ["一是", "二是", "三是"]
    for p in passages:
        place, pages_, from_ocr = locate(doc.meta, p.start, p.end)
        assert from_ocr and place in ("第1页", "第2页", "第1–2页")
        expected = {n + 1 for n, lines in enumerate(truth) if any(line[:6] in p.text for line in lines)}
        assert set(map(int, pages_.split("-"))) <= expected | {min(expected, default=1)}
    last = by_heading["三、工作要求"]
    assert locate(doc.meta, last.start, last.end)[0] == "第2页"


def _text_pdf(text: str) -> bytes:
    from .test_documents import _tiny_pdf

    return _tiny_pdf(text)


def _merge(*pdfs: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    for raw in pdfs:
        w.append(PdfReader(io.BytesIO(raw)))
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


@needs_font
@pytest.mark.ocr
def test_auto_ocrs_only_pages_without_a_text_layer(count_ocr):
    scan = text_image(["第二页是扫描件。", "基层减负要落到实处。"])
    raw = _merge(_text_pdf("The first page has a text layer about roads."), pdf_of([scan]))
    doc = parse_document(raw, "mixed.pdf")
    assert len(count_ocr) == 1
    p1 = doc.text.index("roads")
    p2 = doc.text.index("落到实处")
    assert locate(doc.meta, p1, p1 + 5) == ("第1页", "1", False)
    assert locate(doc.meta, p2, p2 + 4) == ("第2页", "2", True)
    always = parse_document(raw, "mixed.pdf", opts=ReadOptions(ocr="always"))
    assert len(count_ocr) == 3 and "roads" in always.text.replace(" ", "")
    never = parse_document(raw, "mixed.pdf", opts=ReadOptions(ocr="never"))
    assert len(count_ocr) == 3 and "落到实处" not in never.text and "roads" in never.text
    with pytest.raises(DocumentError, match="no text layer.*--ocr never"):
        parse_document(pdf_of([scan]), "scan.pdf", opts=ReadOptions(ocr="never"))


def test_text_layer_pages_are_located_and_a_paragraph_over_a_page_break_is_joined():
    raw = _merge(_text_pdf("Roads were repaired in the spring and"), _text_pdf("the bridges were painted."),
                 _text_pdf("Next year we build a school."))
    doc = parse_document(raw, "report.pdf")
    assert "spring and the bridges were painted.\n\nNext year" in doc.text
    (para,) = [p for p in split_document(doc) if "bridges" in p.text]
    assert "spring and" in para.text  # one paragraph over the break
    assert locate(doc.meta, para.start, para.end)[0] in ("第1–2页", "第1–3页")
    school = doc.text.index("school")
    assert locate(doc.meta, school, school + 6)[:2] == ("第3页", "3")


@needs_font
@pytest.mark.ocr
def test_an_image_is_read_by_ocr_and_a_multi_page_tiff_by_page(tmp_path):
    im = text_image(["一、加强组织领导", "各单位要把减负工作摆上重要议事日程。"])
    doc = parse_document(png_of(im), "notice.png")
    assert doc.format == "image" and "减负工作" in doc.text
    p = [p for p in split_document(doc) if "减负工作" in p.text][0]
    assert p.heading_path[-1].startswith("一、加强组织领导")
    assert locate(doc.meta, p.start, p.end) == ("", "", True)  # one picture: no page number, but OCR
    buf = io.BytesIO()
    second = text_image(["第二页的内容是规范督查检查。"])
    im.save(buf, "TIFF", save_all=True, append_images=[second])
    tiff = parse_document(buf.getvalue(), "scan.tiff")
    at = tiff.text.index("督查检查")
    assert locate(tiff.meta, at, at + 4) == ("第2页", "2", True)
    with pytest.raises(DocumentError, match="OCR is off"):
        parse_document(png_of(im), "notice.png", opts=ReadOptions(ocr="never"))


# --------------------------------------------------------------------------- bad scans


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header(monkeypatch):
    def never(image):
        raise AssertionError("decoded")

    monkeypatch.setattr(ocr, "recognize", never)
    with pytest.raises(DocumentError, match="over the 80-megapixel limit for images"):
        parse_document(_png_header(20000, 20000), "bomb.png")
    with pytest.raises(DocumentError, match="10000×10000 pixels is over the 80-megapixel limit"):
        parse_document(_png_header(10000, 10000), "big.png")
    with pytest.raises(DocumentError, match="not a readable image"):
        parse_document(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "corrupt.png")
    with pytest.raises(DocumentError, match="not a readable image"):
        parse_document(_png_header(100, 100)[:40], "truncated.png")


def test_a_password_protected_pdf_is_skipped_with_one_line():
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    w.append(PdfReader(io.BytesIO(_text_pdf("secret minutes"))))
    w.encrypt(user_password="secret", owner_password="owner")
    buf = io.BytesIO()
    w.write(buf)
    with pytest.raises(DocumentError, match="encrypted"):
        parse_document(buf.getvalue(), "locked.pdf")


@needs_font
@pytest.mark.ocr
def test_a_500_page_scan_is_capped_by_max_pages(count_ocr):
    from PIL import Image

    first = text_image(["第一页：年度工作要点。"])
    blank = [Image.new("L", (60, 80), 255)] * 499
    raw = pdf_of([first] + blank)
    doc = parse_document(raw, "long-scan.pdf", opts=ReadOptions(max_pages=2))
    assert len(count_ocr) == 2 and "年度工作要点" in doc.text
    assert doc.warnings == ["long-scan.pdf: read the first 2 of 500 pages (raise it with --max-pages)"]


# --------------------------------------------------------------------------- indexing


@needs_font
@pytest.mark.ocr
def test_scans_in_a_library_hits_cite_pages_and_the_cache_spares_a_reread(tmp_path, count_ocr, monkeypatch):
    import kb.index.indexer as kbi

    corpus = tmp_path / "docs"
    corpus.mkdir()
    pages = [text_image(["一、总体要求", "精简文件会议，提倡开短会。"]),
             text_image(["二、保障措施", "规范督查检查，每年集中开展一次。"])]
    (corpus / "scan.pdf").write_bytes(pdf_of(pages))
    (corpus / "notes.txt").write_text("会议纪要\n\n乡村道路硬化工程进展顺利。", encoding="utf-8")
    index = tmp_path / "index"
    update_index(corpus, index, model="hash:64", progress=False, warn=lambda m: None)
    assert len(count_ocr) == 2
    s = Searcher.load(index)
    hit = s.search("督查检查", k=1, mode="lexical")[0]
    assert hit.path == "scan.pdf" and hit.locator == "第2页" and hit.ocr
    assert hit.citation.endswith("第2页.") and KEY not in hit.meta
    assert "2" in hit.cited("gbt7714").citation.rsplit(":", 1)[-1]
    shown = s.show(hit.id)
    assert shown["locator"] == "第2页" and shown["ocr"]
    note = s.search("道路硬化", k=1, mode="lexical")[0]
    assert note.locator == "" and not note.ocr
    from click.testing import CliRunner

    from kb.serve.cli import cli

    out = CliRunner().invoke(cli, ["search", "督查检查", "-k", "1", "--mode", "lexical", "--index", str(index)]).output
    assert "[第2页 · OCR]" in out and "引用:" in out and out.rstrip().endswith("第2页.")
    out = CliRunner().invoke(cli, ["search", "督查检查", "-k", "1", "--json", "--index", str(index)]).output
    assert json.loads(out)["hits"][0]["locator"] == "第2页"

    read = []
    real_parse = kbi.parse_document
    monkeypatch.setattr(kbi, "parse_document", lambda raw, rel, **kw: read.append(rel) or real_parse(raw, rel, **kw))
    # another page cap: the scans are read again (their pages from the cache), nothing else
    r = update_index(corpus, index, progress=False, warn=lambda m: None, max_pages=50)
    assert read == ["scan.pdf"] and len(count_ocr) == 2 and r.changed == 1
    assert Searcher.load(index).manifest["pipeline"]["reading"]["max_pages"] == 50
    r = update_index(corpus, index, progress=False, warn=lambda m: None, max_pages=50)
    assert read == ["scan.pdf"] and not r.updated  # settled: nothing read again
    assert (index / "ocr-cache.sqlite").is_file()


@needs_font
@pytest.mark.ocr
def test_a_killed_ocr_run_loses_at_most_the_page_in_progress(tmp_path, monkeypatch):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    pages = [text_image([f"第{n}页的内容：工作要求第{n}条。"]) for n in range(1, 4)]
    (corpus / "scan.pdf").write_bytes(pdf_of(pages))
    index = tmp_path / "index"
    real = ocr.recognize
    calls = []

    def dies_on_the_second_page(image):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill: nothing after this point runs
        return real(image)

    monkeypatch.setattr(ocr, "recognize", dies_on_the_second_page)
    with pytest.raises(KeyboardInterrupt):
        update_index(corpus, index, model="hash:64", progress=False, warn=lambda m: None)
    calls.clear()
    monkeypatch.setattr(ocr, "recognize", lambda image: calls.append(1) or real(image))
    update_index(corpus, index, model="hash:64", progress=False, warn=lambda m: None)
    assert len(calls) == 2  # page 1 came from the cache
    s = Searcher.load(index)
    text = s.document(s.docs[0]["doc_id"])["text"]
    assert all(f"工作要求第{n}条" in text for n in (1, 2, 3))


# --------------------------------------------------------------------------- slides and rows


def test_slides_and_sheet_rows_are_located(tmp_path):
    from .test_formats import pptx_bytes, xlsx_bytes

    deck = parse_document(pptx_bytes([("工作总结", ["全年完成了各项任务，成绩显著。"], ""),
                                       ("下一步打算", ["继续推进乡村振兴，抓好基层减负。"], "")]), "r.pptx")
    p = [p for p in split_document(deck) if "乡村振兴" in p.text][0]
    assert locate(deck.meta, p.start, p.end)[0] == "第2张幻灯片"
    rows = [["项目", "金额"]] + [[f"道路{i}", i] for i in range(1, 30)]
    sheet = parse_document(xlsx_bytes({"预算": rows}), "b.xlsx")
    p = [p for p in split_document(sheet) if "道路7" in p.text][0]
    place = locate(sheet.meta, p.start, p.end)[0]
    first, last = place.strip("第行").split("–")
    assert int(first) <= 8 <= int(last) and place.endswith("行")  # row 8 holds 道路7 (row 1 is the header)
    at = sheet.text.index("道路7；") if "道路7；" in sheet.text else sheet.text.index("道路7")
    assert locate(sheet.meta, at, at + 3)[0] == "第8行"


def test_locators_encode_round_trip_and_bad_data_is_ignored():
    data = encode("page", [(0, 1, False), (120, 2, True), (300, 3, True)])
    meta = {KEY: data}
    assert locate(meta, 0, 10) == ("第1页", "1", False)
    assert locate(meta, 100, 130) == ("第1–2页", "1-2", True)
    assert locate(meta, 310, 320) == ("第3页", "3", True)
    assert locate({KEY: "not json"}, 0, 5) == ("", "", False)
    assert locate({}, 0, 5) == ("", "", False)


def test_the_page_shows_slide_locators_in_cards_and_citations(tmp_path, monkeypatch, page_address):
    from .conftest import run_page
    from .test_formats import pptx_bytes

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "deck.pptx").write_bytes(pptx_bytes([("工作总结", ["全年完成了各项任务，成绩显著。"], ""),
                                                  ("下一步打算", ["继续推进乡村振兴，抓好基层减负。"], "")]))
    update_index(corpus, tmp_path / "index", model="hash:64", progress=False, warn=lambda m: None)
    at = run_page(tmp_path / "index", monkeypatch, q="乡村振兴")
    assert not at.exception
    card = next(m.value for m in at.markdown if 'class="kb-card"' in m.value)
    assert '<span class="kb-loc">第2张幻灯片</span>' in card and "kb-ocr" not in card
    assert at.code[0].value.startswith("《工作总结》. 章节：第2张幻灯片：下一步打算.")


def test_an_icon_is_not_read_as_a_document():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 255, 255)).save(buf, format="PNG")
    with pytest.raises(DocumentError, match="too small to hold a page of text"):
        parse_document(buf.getvalue(), "icons/heart.png")


@needs_font
@pytest.mark.ocr
def test_a_glyph_or_two_read_off_a_picture_is_not_a_document():
    buf = io.BytesIO()
    text_image(["个"], px=60, width=400).save(buf, format="PNG")
    with pytest.raises(DocumentError, match="no text found in the image"):
        parse_document(buf.getvalue(), "button.png")


@needs_font
@pytest.mark.ocr
def test_a_screenshot_is_titled_by_its_file_name_and_a_scanned_page_by_its_first_line():
    shot = parse_document(png_of(text_image(["工具选项", "裁剪", "仅当前图层", "删除裁剪的像素"])), "crop-dialog.png")
    assert shot.title == "crop-dialog"
    page = parse_document(png_of(text_image(["关于开展调研的通知", "各单位要按时报送材料。"])), "scan.png")
    assert page.title.startswith("关于开展调研的通知")  # its first line (OCR may join the next to it)
