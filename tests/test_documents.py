from __future__ import annotations

import codecs
import io

import pytest

from kb.errors import DocumentError, UnsupportedFormat
from kb.read.documents import decode_bytes, extract_meta, header_line_count, parse_document, read_document
from kb.split.passages import split_document

from .conftest import SAMPLE_DOC

CHINESE = "组工干部要站在学习贯彻的最前列。一要勤于学习，二要精于思考。"


@pytest.mark.parametrize(
    "raw, encoding",
    [
        (CHINESE.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + CHINESE.encode("utf-8"), "utf-8 (BOM)"),
        (CHINESE.encode("gb18030"), "gb18030"),
        (CHINESE.encode("gbk"), "gb18030"),
        (codecs.BOM_UTF16_LE + CHINESE.encode("utf-16-le"), "utf-16 (BOM)"),
        (codecs.BOM_UTF16_BE + CHINESE.encode("utf-16-be"), "utf-16 (BOM)"),
        (("Title line\n" + CHINESE).encode("utf-16-le"), "utf-16-le"),
    ],
)
def test_encodings_are_detected(raw, encoding):
    text, enc, warnings = decode_bytes(raw)
    assert text.lstrip("\ufeff").endswith(CHINESE)
    assert enc == encoding
    assert warnings == []


def test_a_few_bad_bytes_are_replaced_with_a_warning():
    raw = ("正文" * 300).encode("utf-8") + b"\xff\xfe\xfd" + "结尾。".encode()
    text, enc, warnings = decode_bytes(raw, "a.txt")
    assert text.endswith("结尾。") and len(warnings) == 1 and "a.txt" in warnings[0]


def test_binary_is_refused():
    with pytest.raises(DocumentError, match="binary"):
        parse_document(bytes(range(256)) * 40, "photo.txt")
    rng = __import__("random").Random(1)
    noise = bytes(rng.randrange(1, 256) for _ in range(5000))
    with pytest.raises(DocumentError):
        parse_document(noise, "noise.txt")


def test_empty_and_whitespace_files_are_refused():
    for raw in (b"", b"  \n\r\n\t", "\u3000\u3000\n".encode()):
        with pytest.raises(DocumentError, match="empty|no text"):
            parse_document(raw, "empty.txt")


def test_unsupported_extension():
    with pytest.raises(UnsupportedFormat, match=r"\.xyz"):
        parse_document(b"hello", "notes.xyz")


def test_size_limit(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * 2048)
    with pytest.raises(DocumentError, match="over the"):
        read_document(big, tmp_path, max_bytes=1024)


def test_sample_document_metadata():
    doc = read_document(SAMPLE_DOC, SAMPLE_DOC.parent)
    assert doc.title == "对生活失去信心的说说:组工干部学习贯彻“七一”讲话精神要争做四个表率"
    assert doc.meta["source"] == "百度文库"
    assert doc.meta["editor"] == "中财网"
    assert doc.meta["date"] == "2024-07-11" and doc.meta["time"] == "12:54:27"
    assert doc.meta["author"] == "董清河"
    assert doc.meta["author_position"] == "中共河北省蔚县县委常委、组织部长"
    assert doc.doc_id == read_document(SAMPLE_DOC, SAMPLE_DOC.parent).doc_id  # stable


def test_metadata_fields_with_labels():
    lines = ["某某报告", "作者：李明  发布时间：2023年5月6日", "来源：人民网"]
    meta = extract_meta(lines)
    assert meta == {"author": "李明", "source": "人民网", "date": "2023-05-06"}
    assert header_line_count(lines + ["正文第一段很长。" * 10]) == 3


def test_html_drops_scripts_and_keeps_headings():
    page = """<html><head><meta charset="gbk"><title>网页标题</title><script>alert(1)</script></head>
    <body><nav>导航</nav><h1>大标题</h1><p>第一段。</p><h2>一、小节</h2><p>第二段<b>加粗</b>。</p></body></html>"""
    doc = parse_document(page.encode("gbk"), "page.html")
    assert doc.title == "网页标题"
    assert "alert" not in doc.text and "导航" not in doc.text
    assert "# 大标题" in doc.text and "第二段加粗。" in doc.text


def test_docx_paragraphs_headings_and_tables():
    import docx

    d = docx.Document()
    d.core_properties.title = "文档标题"
    d.add_heading("一、总体要求", level=1)
    d.add_paragraph("第一段正文。一要学习，二要思考。")
    t = d.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "名称", (0, 1): "数量", (1, 0): "苹果", (1, 1): "3"}.items():
        t.rows[r].cells[c].text = text
    code = d.add_paragraph()
    code.add_run("# apt-get install foo").font.name = "Courier New"
    d.add_paragraph("表后的段落。")
    buf = io.BytesIO()
    d.save(buf)
    doc = parse_document(buf.getvalue(), "a.docx")
    assert doc.title == "文档标题"
    # the table a row a line under its header, where it stands (before the paragraph after it)
    assert "# 一、总体要求\n\n第一段正文。一要学习，二要思考。\n\n列：名称、数量\n名称：苹果；数量：3\n\n" in doc.text
    assert doc.text.index("名称：苹果") < doc.text.index("表后的段落")
    passages = split_document(doc)
    assert [p for p in passages if "# apt-get install foo" in p.text]  # monospace: code, not a heading
    assert not [p for p in passages if any("apt-get" in h for h in p.heading_path)]


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF with a Helvetica text layer (ASCII), built by hand."""
    return pdf_page(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())


def pdf_page(stream: bytes) -> bytes:
    """A one-page PDF whose content is ``stream`` (text in Helvetica, /F1), built by hand."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))
    return out.getvalue()


def test_pdf_text_layer():
    doc = parse_document(_tiny_pdf("Knowledge base test sentence."), "a.pdf")
    assert "Knowledge base test sentence." in doc.text


@pytest.mark.parametrize("name, raw", [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage"),
    ("broken.docx", b"PK\x03\x04 this is not a zip"),
])
def test_corrupt_pdf_and_docx(name, raw):
    with pytest.raises(DocumentError, match=name):
        parse_document(raw, name)
