"""Files read with their own structure: whole HTML paragraphs, tables a row a line, page chrome
dropped; hard-wrapped text reflowed; numbered headings (``1.7.``, ``第 2 章``) and tables of contents;
PDF outlines, page labels and running headers; an EPUB under a sub-folder. Fixtures are small
excerpts written here, modelled on Debian's Chinese manuals."""

from __future__ import annotations

import io
import zipfile

from kb.read.documents import parse_document
from kb.read.locators import locate
from kb.read.plaintext import reflow, wrap_width
from kb.records import CONTENTS_KIND
from kb.split.passages import split_document

from .test_documents import pdf_page
from .test_formats import epub_bytes


def _passages(raw: bytes | str, name: str):
    doc = parse_document(raw.encode() if isinstance(raw, str) else raw, name)
    return doc, split_document(doc)


# --------------------------------------------------------------------------- HTML

PAGE = """<html><head><title>第 2 章 第一步</title></head><body>
<div class="navheader"><table><tr><td><a href="a.html">上一页</a></td>
<td><a href="b.html">下一页</a></td></tr></table></div>
<nav><a href="/">首页</a></nav><aside>广告位</aside>
<div class="toc"><dl><dt><a href="#s1">2.1. 制作流程</a></dt><dt><a href="#s2">2.2. 挑一个程序</a></dt></dl></div>
<h1>第 2 章 第一步</h1>
<h2>2.1. 制作流程</h2>
<p>可能你已经想好了要制作的软件包。那此时第一件要做的事，就是检查它是否已经被别人
打包，并已经安置于发行版仓库中。这里有几种检查方法供您
参考，例如 aptitude
命令。</p>
<p>准备好以下文件：</p>
<pre class="screen">
# apt-get install build-essential
$ dh_make -f ../foo.tar.gz
</pre>
<table><thead><tr><th>文件</th><th>用途</th></tr></thead>
<tr><td>control</td><td>软件包的元数据</td></tr><tr><td>rules</td><td>构建规则</td></tr></table>
<ul><li><a href="x">链接一</a></li><li><a href="y">链接二</a></li><li><a href="z">链接三</a></li></ul>
<div class="navfooter"><a href="c.html">目录</a></div>
</body></html>"""


def test_an_html_paragraph_with_source_line_breaks_is_one_passage_laid_out_as_a_browser_does():
    doc, passages = _passages(PAGE, "first.html")
    para = [p for p in passages if "可能你已经想好了" in p.text]
    assert len(para) == 1
    # CJK lines joined without a space, Latin words (and Latin next to CJK) with one
    assert "已经被别人打包，并已经安置于发行版仓库中。这里有几种检查方法供您参考，例如 aptitude 命令。" in para[0].text
    assert para[0].heading_path[1:] == ["2.1. 制作流程"]  # the title <h1> is not repeated as a section


def test_html_code_is_verbatim_with_its_lead_in_and_a_table_is_a_row_a_line():
    doc, passages = _passages(PAGE, "first.html")
    code = [p for p in passages if "# apt-get install build-essential" in p.text]
    assert len(code) == 1 and "准备好以下文件：" in code[0].text  # the lead-in stays with its code
    assert "# apt-get install build-essential\n$ dh_make -f ../foo.tar.gz" in code[0].text
    assert all(p.heading_path[1:] == ["2.1. 制作流程"] for p in passages if p.kind != "header")  # no "#" heading
    assert "文件：control；用途：软件包的元数据\n文件：rules；用途：构建规则" in doc.text


def test_html_page_chrome_is_dropped():
    doc, _ = _passages(PAGE, "first.html")
    for chrome in ("上一页", "首页", "广告位", "2.2. 挑一个程序", "链接一", "目录"):
        assert chrome not in doc.text


# --------------------------------------------------------------------------- plain text

FAQ = """Debian GNU/Linux 常见问题（FAQ）

目录

1. 定义和概览
    1.1. 本 FAQ 文档是什么？
    1.2. 什么是 Debian GNU/Linux？
2. 获取和安装 Debian GNU/Linux
    2.1. Debian 的最新版本是哪个？

---------------------------------------------------------------------

第 1 章 定义和概览

1.1. 本 FAQ 文档是什么？

    本文档提供了关于 Debian 发行版（Debian GNU/Linux 及其他发行版）和
    Debian 项目的常见问题（以及解答！）。如果可能，会提供到其他文档的链
    接；我们不会在本文档中大量引用其他文档的内容。您会发现，有些解答会
    假定您对类 Unix 操作系统有一定了解。我们会尽可能减少本文档所要求的
    (5) 手册页之类的预备知识。

    要安装，请以 root 身份运行：

    # apt-get install debian-faq

1.2. 什么是 Debian GNU/Linux？这是一个很长的问题标题，它被折成了两
行才写完

    Debian GNU/Linux 是 Linux 操作系统的一个发行版，以及其上运行的无数
    软件包。它是志愿者努力创造出的一个自由的、高质量的、兼容 Unix 的操
    作系统。

第 2 章 获取和安装 Debian GNU/Linux

2.1. Debian 的最新版本是哪个？

    目前的稳定版本是 Debian 11，代号为 bullseye。它最初于 2021 年 8 月 14
    日发布，此后不断更新。每个点版本都修正了安全问题和严重的缺陷，请
    参看发布说明。
"""


def test_hard_wrapped_text_is_reflowed_into_paragraphs():
    assert wrap_width(FAQ.split("\n")) is not None
    doc, passages = _passages(FAQ, "debian-faq.txt")
    (para,) = [p for p in passages if "本文档提供了关于" in p.text]
    assert para.text.startswith("本文档提供了关于 Debian 发行版（Debian GNU/Linux 及其他发行版）和 Debian 项目的"
                                "常见问题")
    assert "提供到其他文档的链接；" in para.text and "(5) 手册页之类的预备知识。" in para.text  # no heading "(5)"
    assert para.heading_path[1:] == ["第 1 章 定义和概览", "1.1. 本 FAQ 文档是什么？"]
    (date,) = [p for p in passages if "bullseye" in p.text]
    assert "它最初于 2021 年 8 月 14 日发布" in date.text  # a Latin/digit break gets its space back
    assert "# apt-get install debian-faq" in doc.text  # a root prompt is text, never joined or a heading


def test_numbered_and_spaced_chapter_headings_nest_and_a_wrapped_heading_is_whole():
    _, passages = _passages(FAQ, "debian-faq.txt")
    paths = {tuple(p.heading_path[1:]) for p in passages}
    assert ("第 2 章 获取和安装 Debian GNU/Linux", "2.1. Debian 的最新版本是哪个？") in paths
    (para,) = [p for p in passages if "无数软件包" in p.text]
    assert para.heading_path[1] == "第 1 章 定义和概览"
    assert para.heading_path[2].startswith("1.2. 什么是 Debian GNU/Linux")


def test_a_table_of_contents_is_one_passage_of_its_own_kind_and_never_a_section():
    _, passages = _passages(FAQ, "debian-faq.txt")
    (toc,) = [p for p in passages if p.kind == CONTENTS_KIND]
    assert toc.text.startswith("目录") and "2.1. Debian 的最新版本是哪个？" in toc.text
    assert all("定义和概览" not in "".join(p.heading_path) or p.heading_path[1].startswith("第 1 章")
               for p in passages if p.kind != CONTENTS_KIND)


def test_text_that_is_not_hard_wrapped_is_left_as_it_is():
    lines = "\n".join(["  一、总体要求", "  " + "各地要认真贯彻落实。" * 12, "  二、工作安排",
                       "  " + "按时完成。" * 30])
    assert reflow(lines) == lines
    short = "第一行\n第二行\n第三行"
    assert reflow(short) == short


def test_a_short_numbered_list_is_not_a_table_of_contents():
    text = "报名须知\n\n需要携带以下材料：\n1. 身份证原件\n2. 近期照片两张\n3. 毕业证书复印件\n\n材料不全的不予受理。"
    _, passages = _passages(text, "notice.txt")
    assert not [p for p in passages if p.kind == CONTENTS_KIND]


# --------------------------------------------------------------------------- PDF


def _pdf(pages: list[list[str | tuple[int, str]]]):
    """A PdfWriter with a Helvetica text layer (ASCII), one list of lines per page; a line is its
    text (set in 12 pt) or ``(size, text)``."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for lines in pages:
        sized = [(12, line) if isinstance(line, str) else line for line in lines]
        ops = " ".join(f"/F1 {size} Tf ({line}) Tj 0 -{size + 6} Td" for size, line in sized)
        writer.append(PdfReader(io.BytesIO(pdf_page(f"BT 72 720 Td {ops} ET".encode()))))
    return writer


def _outlined_pdf() -> bytes:
    from pypdf.constants import PageLabelStyle

    writer = _pdf([
        ["Packaging Guide", "Contents", "1 Getting started . . . . 1", "2 Building . . . . 2"],
        ["Packaging Guide 1", "1 Getting started", "Install the tools first and then read the policy",
         "manual before you start."],
        ["Packaging Guide 2", "2 Building", "Run the build in a clean chroot so that no", "local library leaks in."],
        ["Packaging Guide 3", "2.1 Checking", "Run lintian on the result; it finds most common",
         "mistakes in a package."],
    ])
    writer.set_page_label(0, 0, style=PageLabelStyle.LOWERCASE_ROMAN)
    writer.set_page_label(1, 3, style=PageLabelStyle.DECIMAL, start=45)  # printed 45-47
    writer.add_outline_item(title="Getting started", page_number=1)
    building = writer.add_outline_item(title="Building", page_number=2)
    writer.add_outline_item(title="Checking", page_number=3, parent=building)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_a_pdfs_outline_gives_its_headings_and_no_heading_is_glued_to_its_paragraph():
    doc, passages = _passages(_outlined_pdf(), "guide.pdf")
    check = [p for p in passages if "lintian" in p.text]
    assert len(check) == 1 and check[0].heading_path[1:] == ["2 Building", "2.1 Checking"]
    assert check[0].text.startswith("Run lintian on the result")  # the heading is its own line
    build = [p for p in passages if "clean chroot" in p.text]
    assert build[0].heading_path[1:] == ["2 Building"]
    assert "Run the build in a clean chroot so that no local library leaks in." in build[0].text
    assert "Packaging Guide 2" not in doc.text and "Packaging Guide 3" not in doc.text  # running headers


def test_a_pdfs_page_labels_are_its_locators():
    doc, passages = _passages(_outlined_pdf(), "guide.pdf")
    (check,) = [p for p in passages if "lintian" in p.text]
    assert locate(doc.meta, check.start, check.end)[:2] == ("第47页", "47")  # the 4th sheet, printed 47
    (start,) = [p for p in passages if "Install the tools" in p.text]
    assert locate(doc.meta, start.start, start.end)[0] == "第45页"


def test_a_pdf_without_an_outline_takes_its_headings_from_type_size():
    writer = _pdf([
        [(24, "Packaging Guide"), (20, "Getting started"), "Install the tools first and then read the policy",
         "manual before you start.",
         (15, "Where to ask"), "Ask on the mentors mailing list when you are stuck on", "a packaging question."],
        [(20, "Building"), "Run the build in a clean chroot so that no local", "library leaks into the package."],
    ])
    buf = io.BytesIO()
    writer.write(buf)
    _, passages = _passages(buf.getvalue(), "guide.pdf")
    (ask,) = [p for p in passages if "mentors" in p.text]
    assert ask.heading_path[1:] == ["Getting started", "Where to ask"]
    (build,) = [p for p in passages if "chroot" in p.text]
    assert build.heading_path[1:] == ["Building"] and build.text.startswith("Run the build")


# --------------------------------------------------------------------------- EPUB


def test_an_epub_whose_files_sit_under_a_sub_folder_is_read():
    raw = epub_bytes([("第一章 总则", "为了加强基层治理，制定本读本。")])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name = info.filename if info.filename == "mimetype" else f"book/{info.filename}"
            dst.writestr(name, src.read(info))
    doc, passages = _passages(out.getvalue(), "book.epub")
    assert doc.title == "基层治理读本"
    assert any("为了加强基层治理" in p.text and p.heading_path[1:] == ["第一章 总则"] for p in passages)


def test_a_table_of_contents_is_listed_after_the_sections_it_lists():
    from kb.rank.families import contents_last

    rows = {1: {"kind": CONTENTS_KIND}, 2: {"kind": "paragraph"}, 3: {"kind": "chunk"}, 4: {"kind": CONTENTS_KIND}}
    assert contents_last([1, 2, 4, 3], rows) == [2, 3, 1, 4]


def test_header_fields_run_together_by_ocr_are_told_apart():
    from kb.read.documents import extract_meta

    meta = extract_meta(["组工干部学习贯彻讲话精神", "来源:百度文库编辑:中财网时间:2024/07/11"])
    assert (meta["source"], meta["editor"], meta["date"]) == ("百度文库", "中财网", "2024-07-11")
