"""Files -> Documents: a reader per suffix, encoding detection, metadata from the text.

Every failure is a :class:`DocumentError` whose message names the problem in one
sentence; the indexer turns it into one warning line and carries on.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import logging
import os
import re
import stat
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kb.errors import DocumentError, UnsupportedFormat
from kb.read import locators
from kb.read.plaintext import reflow
from kb.records import CODE_KEY, HEADINGS_KEY, Document
from kb.text.process import normalize
from kb.text.structure import PAGE_NUMBER, glue, header_line_count, heading_match, wide

if TYPE_CHECKING:
    from kb.read.ocr import OcrCache

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Scans are limited by pages (--max-pages) and pixels, not by bytes: a PDF or an image may
# be this large whatever --max-file-mb says (a 100-page scan is easily 50 MB).
MAX_SCAN_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_PAGES = 200
OCR_MODES = ("auto", "always", "never")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SCAN_SUFFIXES = (".pdf",) + IMAGE_SUFFIXES  # what --ocr and --max-pages change


def byte_limit(name: str, max_bytes: int) -> int:
    """The size limit of a file: ``max_bytes``, or :data:`MAX_SCAN_BYTES` for scans."""
    return max(max_bytes, MAX_SCAN_BYTES) if Path(name).suffix.lower() in SCAN_SUFFIXES else max_bytes


@dataclass(frozen=True)
class ReadOptions:
    """How scans are read. ``ocr``: ``auto`` (pages without a text layer, and images),
    ``always`` (every PDF page, the text layer ignored) or ``never``; ``max_pages``: pages
    read per document; ``cache``: OCR results by page image; ``on_page(done, total)``
    after each OCR'd page (progress)."""

    ocr: str = "auto"
    max_pages: int = DEFAULT_MAX_PAGES
    cache: OcrCache | None = None
    on_page: Callable[[int, int], None] | None = None

    def settings(self) -> dict:
        """What changes how a scan reads: part of the index's pipeline settings."""
        from kb.read.ocr import DPI, ENGINE

        return {"ocr": self.ocr, "max_pages": self.max_pages, "engine": ENGINE, "dpi": DPI}


DEFAULT_READ = ReadOptions()

# --------------------------------------------------------------------------- encodings

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


def _plausible(text: str) -> bool:
    """True when decoded text looks like Chinese or Western prose rather than mojibake:
    nearly every character is CJK, CJK punctuation, ASCII or whitespace."""
    if not text:
        return True
    sample = text[:20000]
    good = 0
    for ch in sample:
        o = ord(ch)
        if (
            (32 <= o < 127)
            or ch in "\n\r\t"
            or 0x4E00 <= o <= 0x9FFF
            or 0x3000 <= o <= 0x303F
            or 0xFF00 <= o <= 0xFFEF
            or 0x2010 <= o <= 0x206F
            or 0x3400 <= o <= 0x4DBF
        ):
            good += 1
    return good / len(sample) >= 0.9


def _control_ratio(text: str) -> float:
    sample = text[:20000]
    if not sample:
        return 0.0
    bad = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\n\r\t\f") or 0xFFF0 <= ord(ch) <= 0xFFFF)
    return bad / len(sample)


def _utf16_without_bom(raw: bytes) -> str | None:
    sample = raw[:4096]
    if len(sample) < 4:
        return None
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    half = len(sample) / 2
    if odd_zeros > 0.1 * half and even_zeros * 4 < odd_zeros:
        return "utf-16-le"
    if even_zeros > 0.1 * half and odd_zeros * 4 < even_zeros:
        return "utf-16-be"
    # CJK text in UTF-16 has few zero bytes (only its ASCII: line breaks, digits), so the
    # pattern above misses it; accept a byte order only when it decodes strictly to prose.
    # The wrong order turns 中 (4E2D) into U+2D4E and a line break into U+0A00: not prose.
    if b"\x00" not in sample:
        return None
    for enc in ("utf-16-le", "utf-16-be"):
        try:
            text = codecs.getincrementaldecoder(enc)("strict").decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        if _plausible(text) and _control_ratio(text) <= 0.02:
            return enc
    return None


def decode_bytes(raw: bytes, name: str = "file") -> tuple[str, str, list[str]]:
    """Decode ``raw`` by detection, never assumption. Returns ``(text, encoding, warnings)``.

    Order: BOM; UTF-16 by its zero-byte pattern; strict UTF-8; strict GB18030 (a superset
    of GBK and GB2312) and Big5 when the result is plausible Chinese; charset-normalizer's
    best guess when plausible; finally UTF-8 with replacement if under 1% of the text is
    undecodable (with a warning). Anything else is not text.
    """
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(enc), enc.replace("-sig", "") + " (BOM)", []
            except UnicodeDecodeError as e:
                raise DocumentError(f"{name}: starts with a {enc} byte-order mark but does not decode ({e})")
    enc16 = _utf16_without_bom(raw)
    if enc16:
        try:
            text = raw.decode(enc16)
            if _plausible(text):
                return text, enc16, []
        except UnicodeDecodeError:
            pass
    if b"\x00" in raw[:8192]:
        raise DocumentError(f"{name}: looks binary (contains NUL bytes), not a text document")
    try:
        return raw.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        pass
    for enc in ("gb18030", "big5"):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        if _plausible(text):
            return text, enc, []
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(raw[: 1 << 20]).best()
        if best is not None and best.encoding:
            text = raw.decode(best.encoding, errors="strict")
            if _plausible(text):
                return text, best.encoding, []
    except (UnicodeDecodeError, LookupError):
        pass
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if bad <= 0.01 * max(len(text), 1) and _plausible(text.replace("\ufffd", "")):
        return text, "utf-8", [f"{name}: {bad} undecodable byte sequence(s) replaced with U+FFFD"]
    raise DocumentError(f"{name}: cannot be decoded as text in any known encoding (binary or corrupt?)")


# --------------------------------------------------------------------------- readers


class Read(NamedTuple):
    """What a reader makes of a file's bytes."""

    text: str
    encoding: str
    title: str | None = None
    warnings: list[str] = []
    meta: dict[str, str] = {}  # fields the format itself carries (an HTML page's canonical URL)
    unit: str = ""  # what marks count: "page", "slide", "row" or "image" (kb.read.locators)
    marks: list[tuple[int, int, bool]] = []  # (offset in text, number, read by OCR)
    props: dict[str, Any] = {}  # the file's own properties (DOCX/PDF date, author, keywords as tags):
    #                             used where the text's header says nothing
    code: list[tuple[int, int]] = []  # spans of text that is code (HTML <pre>): no headings in it
    headings: list[tuple[int, int, int]] = []  # (start, end, level) of the headings the file marks
    #                                            (a PDF's outline): then no heading is guessed
    labels: list[str] = []  # a PDF's page labels, page 1 first (printed page numbers: "iv", "45")


class _Blocks:
    """Text built block by block ("\n\n" between blocks), with locator marks at block starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.marks: list[tuple[int, int, bool]] = []

    def add(self, block: str, mark: int | None = None, ocr: bool = False) -> None:
        if self.parts:
            self.pos += 2
        if mark is not None:
            self.marks.append((self.pos, mark, ocr))
        self.parts.append(block)
        self.pos += len(block)

    def add_line(self, line: str) -> None:
        """Continue the last block with ``line`` on a line of its own (a code block's next line)."""
        self.parts[-1] += "\n" + line
        self.pos += 1 + len(line)

    def extend(self, piece: str, mark: int, ocr: bool = False) -> None:
        """Continue the last block with ``piece`` (a paragraph running over a page break),
        marking where ``piece`` starts."""
        joined = glue(self.parts[-1], piece)
        self.pos += len(joined) - len(self.parts[-1])
        self.marks.append((self.pos - len(piece), mark, ocr))
        self.parts[-1] = joined

    def text(self) -> str:
        return "\n\n".join(self.parts)


def _decode_text(raw: bytes, name: str) -> tuple[str, str, list[str]]:
    text, enc, warnings = decode_bytes(raw, name)
    if _control_ratio(text) > 0.02:
        raise DocumentError(f"{name}: looks binary (control characters), not a text document")
    return text, enc, warnings


def _read_text(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    """Plain text; hard-wrapped lines joined back into their paragraphs (kb.read.plaintext)."""
    text, enc, warnings = _decode_text(raw, name)
    return Read(reflow(text), enc, None, warnings)


_MD_HEADING = re.compile(r"^#{1,6}\s")


_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.{0,8192}?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_FM_LINE = re.compile(r"^([A-Za-z_][\w-]*)\s*:\s*(.*)$")
_FM_KEYS = {"title": "title", "date": "date", "source": "source", "author": "author", "tags": "tags",
            "keywords": "tags", "来源": "source", "作者": "author", "日期": "date", "标签": "tags"}
_TAG_SPLIT = re.compile(r"[,;，；、]+")


def split_tags(text: str) -> list[str]:
    """Tags written in one string: separated by commas, semicolons or 、 (either width)."""
    return [t.strip() for t in _TAG_SPLIT.split(text) if t.strip()]


def _fm_value(raw: str) -> str | list[str]:
    raw = raw.strip()
    if raw.startswith("[") and raw.endswith("]"):
        return [v.strip().strip("'\"") for v in raw[1:-1].split(",") if v.strip().strip("'\"")]
    return raw.strip("'\"")


def front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A Markdown file's front matter (``---`` … ``---`` at the very top: ``title``, ``date``,
    ``source``, ``author``, ``tags``/``keywords`` as ``[a, b]``, ``a, b`` or ``- a`` lines) and the
    text without it. Read line by line, never by a YAML loader (no aliases, no tags, no code)."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    fields: dict[str, Any] = {}
    key = None
    for line in m.group(1).splitlines():
        item = re.match(r"^\s*-\s+(.*)$", line)
        if item and key == "tags":
            fields.setdefault("tags", []).append(item.group(1).strip().strip("'\""))
            continue
        km = _FM_LINE.match(line.strip())
        key = _FM_KEYS.get(km.group(1).lower() if km.group(1).isascii() else km.group(1)) if km else None
        if key is None or not km.group(2).strip():
            continue
        value = _fm_value(km.group(2))
        if key == "tags":
            value = value if isinstance(value, list) else split_tags(value)
            fields["tags"] = [v for v in fields.get("tags", []) + value if v][:50]
        elif isinstance(value, str):
            fields[key] = value[:200]
    if "date" in fields:
        day = iso_date(fields.pop("date"))
        if day:
            fields["date"] = day
    return fields, text[m.end():]


def _read_markdown(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    text, enc, warnings = _decode_text(raw, name)
    fields, text = front_matter(text)
    text = reflow(text)
    title = fields.pop("title", None)
    for line in [] if title else text.splitlines():  # else the first line, when it is a heading
        if _MD_HEADING.match(line.strip()):
            title = line.strip().lstrip("#").strip()
            break
        if line.strip():
            break
    return Read(text, enc, title, warnings, fields)


_HTML_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w-]+)""", re.I)
_BLOCK_TAGS = {
    "p", "div", "section", "article", "li", "br", "blockquote", "pre", "ul", "ol",
    "dd", "dt", "dl", "figcaption", "main", "figure", "caption",
}


_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
# Page chrome that is not the document: navigation bars, site headers and footers, side boxes
_CHROME_TAGS = ["script", "style", "noscript", "template", "svg", "iframe", "nav", "header", "footer", "aside",
                "form"]
_CHROME_CLASSES = {"navheader", "navfooter", "breadcrumb", "breadcrumbs", "toc", "docnav"}
_SOFT_BREAK = "\x01"  # a line break in the page's source: a space between words, nothing between CJK


def _drop_chrome(soup) -> None:
    """Remove what is page furniture, not the document: navigation, headers/footers, side boxes,
    DocBook's navigation tables and in-page tables of contents, and link-only lists (three or more
    links and hardly any other text)."""
    for tag in soup(_CHROME_TAGS):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": "navigation"}):
        tag.decompose()
    for tag in soup.find_all(class_=lambda c: c is not None and c in _CHROME_CLASSES):
        tag.decompose()
    for tag in soup.find_all(["ul", "ol", "dl", "table"]):
        if tag.decomposed:
            continue
        links = tag.find_all("a", limit=500)
        if len(links) < 3:
            continue
        text = len("".join(tag.get_text().split()))
        linked = sum(len("".join(a.get_text().split())) for a in links)
        if text and linked >= 0.9 * text:
            tag.decompose()


def _cell_text(cell) -> str:
    return " ".join(cell.get_text(" ").split())


def _table_lines(table) -> list[str]:
    """An HTML table a row a line (:func:`rows_as_lines`), its header the first row when that row
    is ``<th>`` cells or in ``<thead>``."""
    rows = []
    head = False
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue  # a row of a nested table: read with its own table's text
        cells = [c for c in tr.find_all(["th", "td"], recursive=False)]
        if cells:
            if not rows:
                head = all(c.name == "th" for c in cells) or tr.find_parent("thead") is not None
            rows.append([_cell_text(c) for c in cells])
    return rows_as_lines(rows, head)


def rows_as_lines(rows: list[list[str]], header: bool) -> list[str]:
    """A table a row a line, as a spreadsheet is read: under a header row ``列名：值；列名：值``
    (the header first, as ``列：名、名``), else the cells joined by ``；``."""
    names = rows[0] if header and rows else None
    lines = ["列：" + "、".join(t for t in names if t)] if names else []
    for texts in rows[1:] if names else rows:
        if names:
            line = "；".join(f"{names[j] if j < len(names) and names[j] else f'列{j + 1}'}：{t}"
                            for j, t in enumerate(texts) if t)
        else:
            line = "；".join(t for t in texts if t)
        if line:
            lines.append(line)
    return lines


_WS_RUN = re.compile(r"[ \t\r\f\v\u00a0]*\n\s*|[ \t\r\f\v\u00a0]+")


def _soft(text: str) -> str:
    """Text outside ``<pre>`` as a browser lays it out: a run of white space is one space, one that
    holds a line break a soft break (resolved by :func:`_resolve_soft_breaks`)."""
    return _WS_RUN.sub(lambda m: _SOFT_BREAK if "\n" in m.group() else " ", text)


def _resolve_soft_breaks(text: str) -> str:
    def repl(m: re.Match) -> str:
        a = text[m.start() - 1] if m.start() else "\n"
        b = text[m.end()] if m.end() < len(text) else "\n"
        if a in "\n " or b in "\n " or (wide(a) and wide(b)):
            return ""  # as CSS lays out a segment break: removed between two East Asian wide characters
        return " "
    text = re.sub(f"[ {_SOFT_BREAK}]*{_SOFT_BREAK}[ {_SOFT_BREAK}]*", repl, text)
    return re.sub(r"(?m)^ +| +$", "", text)


def _html_text(soup) -> tuple[str, list[tuple[int, int]]]:
    """The page's text, a heading as a ``#`` line, a paragraph (``p``, ``li``, ``dd``, a ``div``'s
    text) a line of its own with the source's line breaks laid out as a browser does, a table a row
    a line (:func:`_table_lines`), in one iterative walk: linear in the size of the tree however
    deep it nests. Also the spans of its ``<pre>`` blocks, kept verbatim: code, whose ``# `` lines
    are prompts and comments, not headings."""
    from bs4 import CData, NavigableString, Tag

    out: list[str] = []
    size = 0
    code: list[tuple[int, int]] = []
    pre_start: list[int] = []
    stack: list[tuple[object, str | None]] = [(soup, None)]
    while stack:
        node, closing = stack.pop()
        piece = None
        if closing == _PRE_END:
            code.append((pre_start.pop(), size))
            piece = "\n"
        elif closing is not None:
            piece = closing
        elif isinstance(node, Tag):
            level = _HEADING_TAGS.get(node.name)
            if level and not pre_start:
                piece = "\n\n" + "#" * level + " "
                stack.append((None, "\n\n"))
            elif node.name == "table" and not pre_start:
                lines = _table_lines(node)
                piece = ("\n" + "\n".join(lines) + "\n") if lines else None
                node = None  # its cells are read
            elif node.name == "pre" and not pre_start:
                piece = "\n"
                pre_start.append(size + 1)
                stack.append((None, _PRE_END))
            elif node.name in _BLOCK_TAGS and not pre_start:
                piece = "\n"
                stack.append((None, "\n"))
            if node is not None:
                stack.extend((child, None) for child in reversed(node.contents))
        elif type(node) in (NavigableString, CData):  # what get_text() reads: no comments, doctypes
            piece = str(node) if pre_start else _soft(str(node))
        if piece:
            out.append(piece)
            size += len(piece)
    text = "".join(out)
    if not code:
        return _resolve_soft_breaks(text), code
    # resolve soft breaks piece by piece between the code spans, keeping the spans' offsets true
    parts, spans, pos = [], [], 0
    for a, b in code:
        parts.append(_resolve_soft_breaks(text[pos:a]))
        start = sum(map(len, parts))
        parts.append(text[a:b])
        spans.append((start, start + b - a))
        pos = b
    parts.append(_resolve_soft_breaks(text[pos:]))
    return "".join(parts), spans


_PRE_END = "\x00pre"  # the walk's mark for the end of a <pre> block


_HTML_DATE_NAMES = ("article:published_time", "og:published_time", "pubdate", "publishdate", "publish_date",
                    "date", "dc.date", "dc.date.issued", "dcterms.issued", "dcterms.created",
                    "citation_publication_date", "citation_date", "published_time", "firstpublishedtime")


def _html_fields(soup) -> dict[str, Any]:
    """A page's own date (``<meta>`` of a publication date, else its first ``<time datetime>``),
    author (``<meta name="author">``) and tags (``<meta name="keywords">``)."""
    found: dict[str, Any] = {}
    metas = {}
    for tag in soup.find_all("meta", limit=500):
        key = str(tag.get("name") or tag.get("property") or tag.get("itemprop") or "").strip().lower()
        if key and key not in metas and tag.get("content"):
            metas[key] = str(tag.get("content"))[:200]
    for key in _HTML_DATE_NAMES:
        day = iso_date(metas.get(key, ""))
        if day:
            found["date"] = day
            break
    if "date" not in found:
        t = soup.find("time", attrs={"datetime": True})
        day = iso_date(str(t.get("datetime"))) if t is not None else None
        if day:
            found["date"] = day
    if metas.get("author", "").strip():
        found["author"] = metas["author"].strip()
    tags = split_tags(metas.get("keywords", ""))
    if tags:
        found["tags"] = tags[:50]
    return found


def _read_html(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    from bs4 import BeautifulSoup

    m = _HTML_META_CHARSET.search(raw[:4096])
    html = None
    enc = ""
    warnings: list[str] = []
    if m:
        try:
            enc = m.group(1).decode("ascii").lower()
            html = raw.decode(enc)
        except (LookupError, UnicodeDecodeError):
            html = None
    if html is None:
        html, enc, warnings = decode_bytes(raw, name)
    try:
        soup = BeautifulSoup(html, "html.parser")
    except Exception as e:  # html.parser is lenient; this is a last resort
        raise DocumentError(f"{name}: HTML could not be parsed ({e})") from e
    title = None
    if soup.title and soup.title.get_text(strip=True):
        title = soup.title.get_text(strip=True)
    meta = {}
    link = soup.find("link", rel="canonical") or soup.find("meta", property="og:url")
    url = first_url(str(link.get("href") or link.get("content") or "")) if link else None
    if url:
        meta["url"] = url
    meta.update(_html_fields(soup))
    if soup.head:
        soup.head.decompose()
    _drop_chrome(soup)
    text, code = _html_text(soup)
    if title is None:
        h1 = re.search(r"^# (.+)$", text, re.M)
        title = h1.group(1).strip() if h1 else None
    return Read(text, enc, title, warnings, meta, code=code)


# Office files and EPUBs are zip archives: refuse one that would unpack to more than this
# (a zip bomb) before any library decompresses it.
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024


@contextmanager
def _reading(name: str, kind: str):
    """Any failure of a format library inside becomes the one-line "not a readable …" error."""
    try:
        yield
    except DocumentError:
        raise
    except Exception as e:  # libraries raise anything on a corrupt file; each is one message here
        raise DocumentError(f"{name}: not a readable {kind} file ({type(e).__name__}: {e})") from e


def _check_zip(raw: bytes, name: str, kind: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            total = sum(info.file_size for info in z.infolist())
    except Exception as e:  # BadZipFile, NotImplementedError (zip version), ...: all mean "not readable"
        raise DocumentError(f"{name}: not a readable {kind} file ({type(e).__name__}: {e})") from e
    if total > MAX_UNZIPPED_BYTES:
        raise DocumentError(f"{name}: unpacks to {total / 1048576:.0f} MB, over the "
                            f"{MAX_UNZIPPED_BYTES / 1048576:.0f} MB limit for {kind} files")


def _read_docx(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    _check_zip(raw, name, "DOCX")
    try:
        import docx

        d = docx.Document(io.BytesIO(raw))
    except Exception as e:
        raise DocumentError(f"{name}: not a readable DOCX file ({type(e).__name__}: {e})") from e
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    blocks = _Blocks()
    code: list[tuple[int, int]] = []
    last_code = False
    for el in d.element.body.iterchildren():  # paragraphs and tables in reading order
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "tbl":
            rows = [[c.text.strip() for c in _unique_cells(row)] for row in Table(el, d).rows]
            lines = rows_as_lines([r for r in rows if any(r)], header=True)
            if lines:
                blocks.add("\n".join(lines))
            last_code = False
            continue
        if tag != "p":
            continue
        p = Paragraph(el, d)
        style = (p.style.name if p.style is not None else "") or ""
        if _is_code(p, style):  # kept verbatim, one block with the code paragraphs before it
            text = p.text.rstrip()
            if not text.strip():
                continue
            if last_code:
                blocks.add_line(text)
                code[-1] = (code[-1][0], blocks.pos)
            else:
                blocks.add(text)
                code.append((blocks.pos - len(text), blocks.pos))
            last_code = True
            continue
        last_code = False
        text = p.text.strip()
        if not text:
            continue
        m = re.match(r"(?:Heading|标题)\s*(\d)", style)
        blocks.add("#" * int(m.group(1)) + " " + text if m else text)
    core = d.core_properties
    title = (core.title or "").strip() or None
    return Read(blocks.text(), "docx", title, props=_properties(core.created, core.keywords), code=code)


_MONOSPACE = ("courier", "consolas", "menlo", "monaco", "mono", "source code")


def _is_code(p, style: str) -> bool:
    """A DOCX paragraph that is code: a code style (pandoc's "Source Code", "HTML Preformatted"…)
    or every run in a monospace font."""
    if re.search(r"code|preformatted|代码", style, re.I):
        return True
    fonts = [(r.font.name or "").lower() for r in p.runs if r.text.strip()]
    return bool(fonts) and all(any(m in f for m in _MONOSPACE) for f in fonts)


def _unique_cells(row) -> list:
    """A table row's cells, a merged cell once (python-docx repeats it for every grid column)."""
    seen, out = set(), []
    for cell in row.cells:
        if id(cell._tc) not in seen:
            seen.add(id(cell._tc))
            out.append(cell)
    return out


MIN_TEXT_LAYER_CHARS = 10  # a page with fewer characters in its text layer is a scan (auto OCR)


def _read_pdf(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    """Page by page: the text layer, or OCR for pages without one (``opts.ocr``); at
    most ``opts.max_pages`` pages. Each page is a locator mark (``第3页``); a paragraph
    that runs over a page break is joined back together."""
    warnings: list[str] = []
    try:
        from pypdf import PdfReader

        logging.getLogger("pypdf").setLevel(logging.ERROR)  # font-parsing advice is not the user's problem
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            try:
                reader.decrypt("")
                reader.pages[0]
            except Exception as e:
                raise DocumentError(f"{name}: PDF is encrypted (password-protected)") from e
        total = len(reader.pages)
        n = min(total, opts.max_pages)
        if total > n:
            warnings.append(f"{name}: read the first {n} of {total} pages (raise it with --max-pages)")
        outline = _pdf_outline(reader, n)
        sized: list[list[tuple[float, str]]] = [[] for _ in range(n)]  # (font size, text) runs per page
        pages = [_page_text(reader.pages[i], None if outline else sized[i]) if opts.ocr != "always" else ""
                 for i in range(n)]
        outline = outline or _font_headings(sized)
        labels = _pdf_page_labels(reader, n)
        title, props = None, {}
        info = reader.metadata
        if info:
            title = str(info.title).strip() or None if info.title else None
            try:
                created = info.creation_date
            except Exception:  # a malformed date string in the PDF's info
                created = None
            props = _properties(created, info.get("/Keywords"))
    except DocumentError:
        raise
    except Exception as e:
        raise DocumentError(f"{name}: not a readable PDF file ({type(e).__name__}: {e})") from e
    page_lines = _drop_running_lines([p.splitlines() for p in pages])
    marked = _outline_lines(page_lines, outline)  # page -> {line number: level}
    texts = [_drop_page_number(_unwrap_pdf_lines(lines, marked.get(i, {}))) for i, lines in enumerate(page_lines)]
    scanned = [i for i, t in enumerate(texts) if len("".join(t.split())) < MIN_TEXT_LAYER_CHARS]
    ocred: set[int] = set()
    if scanned and opts.ocr != "never":
        ocred = _ocr_pdf_pages(raw, name, scanned, opts, texts, warnings)
    heading_texts = {i: {page_lines[i][k].strip() for k in lines} for i, lines in marked.items()}
    outline_texts = set().union(*heading_texts.values())
    blocks = _Blocks()
    for i, t in enumerate(texts):
        t = t.strip()
        if not t:
            continue
        prev = blocks.parts[-1] if blocks.parts else ""
        starts_heading = t.split("\n", 1)[0] in heading_texts.get(i, ())
        if prev and not prev.endswith(tuple(_SENT_END_CHARS + ".")) and not heading_match(t) and not starts_heading \
                and heading_match(prev.rsplit("\n", 1)[-1]) is None and prev.rsplit("\n", 1)[-1] not in outline_texts \
                and not _DOT_LEADER.search(prev):
            # the paragraph goes on over the page break: join the page's first line to it
            head, _, rest = t.partition("\n")
            blocks.extend(head, i + 1, i in ocred)
            if rest:
                blocks.add(rest)
            continue
        blocks.add(t, i + 1, i in ocred)
    text = blocks.text()
    if not text.strip():
        if scanned and opts.ocr == "never":
            raise DocumentError(f"{name}: PDF has no text layer (a scan? OCR is off: --ocr never)")
        raise DocumentError(f"{name}: no text found in the PDF" + (" (OCR found none either)" if ocred else ""))
    headings = []
    cursor = 0
    for i in sorted(marked):  # where each outline heading line ended up, in order
        for k, level in sorted(marked[i].items()):
            line = page_lines[i][k].strip()
            at = _line_at(text, line, cursor)
            if at >= 0:
                headings.append((at, at + len(line), level))
                cursor = at + len(line)
    return Read(text, "pdf", title, warnings, {}, "page", blocks.marks, props, headings=headings, labels=labels)


def _line_at(text: str, line: str, start: int) -> int:
    """Where ``line`` stands as a whole line of ``text`` at or after ``start``, or -1."""
    at = text.find(line, start)
    while at >= 0:
        end = at + len(line)
        if (at == 0 or text[at - 1] == "\n") and (end == len(text) or text[end] == "\n"):
            return at
        at = text.find(line, at + 1)
    return -1


def _pdf_outline(reader, pages: int) -> list[tuple[int, str, int]]:
    """The PDF's outline (bookmarks) as ``(level, title, page index)``, level 1 outermost; empty
    when it has none or it cannot be read."""
    found: list[tuple[int, str, int]] = []

    def walk(items, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a bookmark to nowhere
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            if title and page is not None and 0 <= page < pages and len(found) < MAX_OUTLINE_ENTRIES:
                found.append((min(level, 6), title, page))
    try:
        walk(reader.outline, 1)
    except Exception:  # a malformed outline is no outline
        return []
    return found


MAX_OUTLINE_ENTRIES = 5_000
HEADING_SIZE_RATIO = 1.15  # a line set this much larger than the body text is a heading
MAX_SIZED_HEADING_CHARS = 60


def _page_text(page, sized: list[tuple[float, str]] | None) -> str:
    """A page's text layer; with ``sized``, also the size each run of text is set in."""
    if sized is None:
        return page.extract_text() or ""

    def visit(text, cm, tm, font, size):
        if text and size:
            scale = abs((tm[3] if tm else 1) * (cm[3] if cm else 1)) or 1
            sized.append((round(float(size) * scale, 1), text))
    return page.extract_text(visitor_text=visit) or ""


def _font_headings(pages: list[list[tuple[float, str]]]) -> list[tuple[int, str, int]]:
    """Headings of a PDF without an outline, from type size: runs of text set at least
    :data:`HEADING_SIZE_RATIO` larger than the body (the size most characters have), the larger
    the outer (``(level, text, page)``, as :func:`_pdf_outline` gives). Text that stands on half
    the pages or more (a running header) is none."""
    chars: dict[float, int] = {}
    for runs in pages:
        for size, text in runs:
            chars[size] = chars.get(size, 0) + len(text.strip())
    if not chars:
        return []
    body = max(chars, key=chars.get)
    found: list[tuple[float, str, int]] = []
    for page, runs in enumerate(pages):
        current: list[str] = []
        current_size = 0.0

        def close() -> None:
            title = " ".join("".join(current).split())
            if 2 <= len(title) <= MAX_SIZED_HEADING_CHARS and _WORD_CHARS.search(title):
                found.append((current_size, title, page))
            current.clear()

        for size, text in runs:
            large = size >= body * HEADING_SIZE_RATIO
            if current and (not large or abs(size - current_size) > 0.5 or "\n" in "".join(current)):
                close()
            if large:
                current_size = size
                current.append(text)
        if current:
            close()
    counts: dict[str, int] = {}
    for _, title, _ in found:
        counts[title] = counts.get(title, 0) + 1
    sizes = sorted({size for size, _, _ in found}, reverse=True)
    return [(min(sizes.index(size) + 1, 6), title, page) for size, title, page in found
            if len(pages) < 4 or counts[title] < len(pages) / 2]


def _pdf_page_labels(reader, pages: int) -> list[str]:
    """The printed page numbers (``/PageLabels``: ``i``, ``ii``, ``1``…) of the first ``pages``
    pages, or [] when the PDF has none (or they are just 1, 2, 3…)."""
    try:
        if "/PageLabels" not in reader.trailer["/Root"]:
            return []
        labels = [str(label) for label in reader.page_labels[:pages]]
    except Exception:
        return []
    return [] if labels == [str(i + 1) for i in range(len(labels))] else labels


_DIGITS = re.compile(r"\d+")


def _drop_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Pages without their running headers and footers: a first or last line that, digits aside,
    stands at the top or bottom of at least half the pages (three or more)."""
    if len(pages) < 3:
        return pages

    def shape(line: str) -> str:
        return _DIGITS.sub("#", "".join(line.split()))

    counts: dict[tuple[str, str], int] = {}
    for lines in pages:
        body = [ln for ln in lines if ln.strip()]
        for where, line in (("top", body[0] if body else ""), ("bottom", body[-1] if body else "")):
            key = (where, shape(line))
            if key[1]:
                counts[key] = counts.get(key, 0) + 1
    running = {key for key, c in counts.items() if c >= max(3, len(pages) // 2)}
    out = []
    for lines in pages:
        lines = list(lines)
        for where, pick in (("top", 0), ("bottom", -1)):
            body = [k for k, ln in enumerate(lines) if ln.strip()]
            if body and (where, shape(lines[body[pick]])) in running:
                lines[body[pick]] = ""
        out.append(lines)
    return out


_OUTLINE_NUMBER = re.compile(r"^(?:第\s*[\d一二三四五六七八九十百]+\s*[章节部分篇]|chapter\s+\d+|"
                             r"[\dA-Z]{1,3}(?:[.．]\d{1,3})*[.．]?)\s*", re.I)


def _outline_lines(pages: list[list[str]], outline: list[tuple[int, str, int]]) -> dict[int, dict[int, int]]:
    """For each page, the lines that are its outline entries' headings: ``{page: {line: level}}``.
    A heading line is the entry's title, perhaps after its number (``2.5 常见的…``, ``第 2 章 …``)."""
    marked: dict[int, dict[int, int]] = {}
    for level, title, page in outline:
        want = "".join(title.split())
        for p in (page, page + 1):  # a bookmark may point at the page before its heading
            if p >= len(pages):
                continue
            taken = marked.setdefault(p, {})
            for k, line in enumerate(pages[p]):
                flat = "".join(line.split())
                if k in taken or not flat.endswith(want):
                    continue
                prefix = flat[: len(flat) - len(want)]
                if not prefix or _OUTLINE_NUMBER.fullmatch(prefix):
                    taken[k] = level
                    break
            else:
                continue
            break
    return {p: lines for p, lines in marked.items() if lines}


def _ocr_pdf_pages(raw: bytes, name: str, pages: list[int], opts: ReadOptions, texts: list[str],
                   warnings: list[str]) -> set[int]:
    """OCR ``pages`` (0-based) of the PDF into ``texts``; returns those read."""
    try:
        import pypdfium2 as pdfium

        from kb.read import ocr
    except ImportError:
        warnings.append(f"{name}: {len(pages)} page(s) without a text layer were not read: OCR is not installed "
                        "(pip install rapidocr onnxruntime pypdfium2)")
        return set()
    done: set[int] = set()
    with _reading(name, "PDF"):
        pdf = pdfium.PdfDocument(raw)
    try:
        for k, i in enumerate(pages, 1):
            try:
                page = pdf[i]
                try:
                    w, h = page.get_size()
                    scale = ocr.DPI / 72
                    pixels = max(w, 1.0) * max(h, 1.0) * scale * scale
                    if pixels > ocr.MAX_PAGE_PIXELS:
                        scale *= (ocr.MAX_PAGE_PIXELS / pixels) ** 0.5
                    image = page.render(scale=scale, grayscale=True).to_pil()
                finally:
                    page.close()
                lines = ocr.read_page(image, opts.cache)
                texts[i] = ocr.rejoin(lines, image.size[1])
                done.add(i)
            except DocumentError as e:  # OCR cannot run at all: say it once
                warnings.append(f"{name}: {len(pages) - k + 1} page(s) without a text layer were not read ({e})")
                break
            except Exception as e:  # one bad page does not lose the document
                warnings.append(f"{name}: page {i + 1} could not be read by OCR ({type(e).__name__}: {e})")
            if opts.on_page:
                opts.on_page(k, len(pages))
    finally:
        pdf.close()
    return done


def _drop_page_number(page: str) -> str:
    """A page's text without a first or last line that is only its page number."""
    lines = page.strip().split("\n")
    if lines and PAGE_NUMBER.match(lines[-1]):
        lines.pop()
    if lines and PAGE_NUMBER.match(lines[0]):
        lines.pop(0)
    return "\n".join(lines)


@contextmanager
def warnings_off():
    """Pillow warns of large images on stderr; kb checks the size itself."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _read_image(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    """A photo or scan, read by OCR: its size is checked from the header before any pixel
    is decoded; a multi-page TIFF is read page by page (at most ``opts.max_pages``)."""
    if opts.ocr == "never":
        raise DocumentError(f"{name}: images are read by OCR, and OCR is off (--ocr never)")
    try:
        from kb.read import ocr
    except ImportError as e:  # pragma: no cover - kb.read.ocr imports nothing optional at module level
        raise DocumentError(f"{name}: OCR is not installed") from e
    from PIL import Image

    warnings: list[str] = []
    blocks = _Blocks()
    with _reading(name, "image"):
        try:
            with warnings_off():
                im = Image.open(io.BytesIO(raw))
        except Image.UnidentifiedImageError as e:
            raise DocumentError(f"{name}: not a readable image file (not an image, or corrupt)") from e
        except Image.DecompressionBombError as e:  # Pillow's own check, on the header, at twice our limit
            raise DocumentError(f"{name}: over the {ocr.MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit for images "
                                "(a decompression bomb?)") from e
        frames = int(getattr(im, "n_frames", 1) or 1)
        n = min(frames, opts.max_pages)
        if frames > n:
            warnings.append(f"{name}: read the first {n} of {frames} pages (raise it with --max-pages)")
        for k in range(n):
            if k:
                im.seek(k)
            w, h = im.size
            if w * h > ocr.MAX_IMAGE_PIXELS:
                raise DocumentError(f"{name}: {w}×{h} pixels is over the {ocr.MAX_IMAGE_PIXELS // 1_000_000}-megapixel"
                                    " limit for images")
            if frames == 1 and (max(w, h) < MIN_TEXT_IMAGE_SIDE or w * h < MIN_TEXT_IMAGE_SIDE ** 2):
                raise DocumentError(f"{name}: {w}×{h} pixels is too small to hold a page of text (an icon?); "
                                    "not read")
            if im.format == "JPEG":
                im.draft("RGB", (ocr.OCR_MAX_SIDE, ocr.OCR_MAX_SIDE))  # decode big photos at a fraction
            page = im.convert("RGB")
            text = ocr.rejoin(ocr.read_page(page, opts.cache), page.size[1])
            blocks.add(text.strip(), k + 1, True)
            if opts.on_page:
                opts.on_page(k + 1, n)
    text = blocks.text()
    if len(_WORD_CHARS.findall(text)) < MIN_OCR_CHARS:  # a glyph or two read off a picture is not a document
        raise DocumentError(f"{name}: no text found in the image (OCR)")
    return Read(text, "ocr", None, warnings, {}, "page" if frames > 1 else "image", blocks.marks)


MIN_TEXT_IMAGE_SIDE = 100  # pixels: a smaller image (an icon, a bullet, a button) holds no page of text
MIN_OCR_CHARS = 4  # letters, digits or Chinese characters an image's OCR must find to be a document
_WORD_CHARS = re.compile(r"[0-9A-Za-z\u4e00-\u9fff]")


_SENT_END_CHARS = "。！？!?；;：:”’」』）)"


_DOT_LEADER = re.compile(r"(?:[.…·]\s?){3,}\s*\d{1,4}$")  # a contents line: "1.1 起点 . . . . 3"


def _unwrap_pdf_lines(lines: list[str], headings: dict[int, int] | None = None) -> str:
    """PDF text comes as visual lines; join a line to the next unless it ends a sentence
    or one of them is a heading (numbered, or a line of the outline: ``headings``), so that
    paragraphs survive. A word hyphenated over the line end is joined back."""
    out: list[str] = []
    headings = headings or {}
    last_heading = False
    for k, line in enumerate(lines):
        line = line.strip()
        if not line:
            out.append("")
            continue
        if k in headings:
            out.append(line)
            last_heading = True
            continue
        if out and out[-1] and not last_heading and not out[-1].endswith(tuple(_SENT_END_CHARS)) \
                and not heading_match(line) and heading_match(out[-1]) is None and not _DOT_LEADER.search(out[-1]):
            prev = out[-1]
            if len(prev) > 1 and prev[-1] == "-" and prev[-2].isalpha() and prev[-2].isascii() and line[0].islower():
                out[-1] = prev[:-1] + line  # "docu-" + "ment"
            else:
                sep = " " if prev[-1].isascii() and line[0].isascii() else ""
                out[-1] = prev + sep + line
            continue
        out.append(line)
        last_heading = False
    return "\n".join(out)


Reader = Callable[[bytes, str, ReadOptions], Read]


def _titled(title: str, blocks: list[str]) -> str:
    """The document's title as its first line, so that the first slide, sheet or chapter
    heading is read as a heading and not as the title."""
    return "\n\n".join([title] + blocks)


def _titled_marked(title: str, blocks: list[tuple[str, int | None]]) -> tuple[str, list[tuple[int, int, bool]]]:
    """:func:`_titled` for blocks with locator marks (``(block, number or None)``)."""
    out = _Blocks()
    out.add(title)
    for block, mark in blocks:
        out.add(block, mark)
    return out.text(), out.marks


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in (text or "").replace("\x0b", "\n").splitlines() if ln.strip()]


def _read_pptx(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    """One heading per slide (``## 第3张幻灯片：标题``, so the slide number is in every
    passage's section path and citation), its text, tables, then its speaker notes."""
    _check_zip(raw, name, "PPTX")
    with _reading(name, "PPTX"):
        from pptx import Presentation

        deck = Presentation(io.BytesIO(raw))
        out: list[tuple[str, int | None]] = []
        first_title = None
        for n, slide in enumerate(deck.slides, 1):
            title_shape = slide.shapes.title
            title = " ".join(_lines(title_shape.text_frame.text)) if title_shape is not None and \
                title_shape.has_text_frame else ""
            body: list[str] = []
            for shape in slide.shapes:
                if shape is title_shape:
                    continue
                if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                    body.extend(_lines(shape.text_frame.text))
                if getattr(shape, "has_table", False) and shape.has_table:
                    for row in shape.table.rows:
                        cells = [c.text.strip() for c in row.cells if c.text.strip()]
                        if cells:
                            body.append(" | ".join(cells))
            if not title and body:
                title = body.pop(0)[:40]
            first_title = first_title or title
            out.append((f"## 第{n}张幻灯片" + (f"：{title}" if title else ""), n))
            out.extend((b, None) for b in body)
            if slide.has_notes_slide:
                notes = _lines(slide.notes_slide.notes_text_frame.text) if slide.notes_slide.notes_text_frame else []
                if notes:
                    out.append(("备注：" + " ".join(notes), None))
        core_title = (deck.core_properties.title or "").strip()
    if not any(mark is None for _, mark in out):
        raise DocumentError(f"{name}: no text on any slide (pictures only?)")
    text, marks = _titled_marked(core_title or first_title or Path(name).stem, out)
    return Read(text, "pptx", core_title or first_title, [], {}, "slide", marks)


MAX_SHEET_ROWS = 100_000  # per workbook; a sheet of a million empty rows is not read to its end
MAX_EMPTY_ROWS = 1_000  # this many empty rows in a row end a sheet


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _read_xlsx(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    """One heading per sheet (``## 工作表：名称``); every row a line ``列名：值；列名：值``
    with the sheet's first non-empty row as the header; formulas as their cached values."""
    _check_zip(raw, name, "XLSX")
    with _reading(name, "XLSX"):
        from openpyxl import load_workbook

        wb = load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
        out: list[tuple[str, int | None]] = []
        rows_read = 0
        for ws in wb.worksheets:
            header: list[str] | None = None
            header_row = 0
            lines: list[tuple[str, int]] = []
            empty = 0
            for r, row in enumerate(ws.iter_rows(values_only=True), start=ws.min_row or 1):
                rows_read += 1
                cells = [_cell(v) for v in row]
                if not any(cells):
                    empty += 1
                    if empty >= MAX_EMPTY_ROWS:
                        break
                    continue
                empty = 0
                if header is None:
                    header, header_row = cells, r
                    continue
                pairs = [f"{header[i] if i < len(header) and header[i] else f'列{i + 1}'}：{v}"
                         for i, v in enumerate(cells) if v]
                lines.append(("；".join(pairs), r))
                if rows_read >= MAX_SHEET_ROWS:
                    break
            if header is not None:
                out.append((f"## 工作表：{ws.title}", header_row))
                out.append(("列：" + "、".join(h for h in header if h), header_row))
                out.extend(lines)
            if rows_read >= MAX_SHEET_ROWS:
                break
        wb.close()
    if not out:
        raise DocumentError(f"{name}: no cells with values")
    text, marks = _titled_marked(Path(name).stem, out)
    return Read(text, "xlsx", None, [], {}, "row", marks)


_CONTAINER = "META-INF/container.xml"


def _epub_rooted(raw: bytes) -> bytes:
    """The EPUB as ebooklib reads it: ``META-INF/container.xml`` at the root. An EPUB whose files
    sit under a sub-folder (``book/META-INF/container.xml``) has the folder taken off; one with no
    container but an ``.opf`` package file gets a container naming it."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        names = z.namelist()
        if _CONTAINER in names:
            return raw
        nested = sorted((n for n in names if n.endswith("/" + _CONTAINER)), key=len)
        prefix = nested[0][: -len(_CONTAINER)] if nested else ""
        opfs = sorted((n for n in names if n.lower().endswith(".opf")), key=len)
        if not prefix and not opfs:
            return raw  # ebooklib says what is missing
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in z.infolist():
                if prefix and not info.filename.startswith(prefix):
                    continue
                dst.writestr(info.filename[len(prefix):], z.read(info))
            if not prefix:
                dst.writestr(_CONTAINER, '<?xml version="1.0"?><container version="1.0" '
                             'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                             f'<rootfile full-path="{html.escape(opfs[0])}" '
                             'media-type="application/oebps-package+xml"/>'
                             '</rootfiles></container>')
        return out.getvalue()


def _read_epub(raw: bytes, name: str, opts: ReadOptions = DEFAULT_READ) -> Read:
    """Chapters in reading order, each under its own heading."""
    _check_zip(raw, name, "EPUB")
    with _reading(name, "EPUB"):
        import tempfile

        import ebooklib
        from ebooklib import epub

        with tempfile.NamedTemporaryFile(suffix=".epub") as f:  # ebooklib reads from a path
            f.write(_epub_rooted(raw))
            f.flush()
            book = epub.read_epub(f.name, options={"ignore_ncx": True})
        out: list[str] = []
        spans: list[tuple[int, list[tuple[int, int]]]] = []  # (block, its chapter's <pre> spans in the block)
        for item_id, _ in book.spine:
            item = book.get_item_with_id(item_id)
            if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
                continue
            chapter = _read_html(item.get_content(), f"{name}:{item.get_name()}")
            text = chapter.text.strip()
            if not text:
                continue
            if chapter.title and not text.lstrip("# ").startswith(chapter.title):
                out.append(f"# {chapter.title}")
            lead = len(chapter.text) - len(chapter.text.lstrip())
            spans.append((len(out), [(a - lead, b - lead) for a, b in chapter.code]))
            out.append(text)
        titles = book.get_metadata("DC", "title")
        title = str(titles[0][0]).strip() if titles else None
    if not out:
        raise DocumentError(f"{name}: no text in any chapter")
    head = title or Path(name).stem
    starts = [len(head) + 2]  # where each block begins in the joined text (blocks are "\n\n" apart)
    for block in out[:-1]:
        starts.append(starts[-1] + len(block) + 2)
    code = [(starts[i] + a, starts[i] + b) for i, chapter_spans in spans for a, b in chapter_spans]
    return Read(_titled(head, out), "epub", title, code=code)


READERS: dict[str, tuple[str, Reader]] = {
    ".txt": ("txt", _read_text),
    ".text": ("txt", _read_text),
    ".md": ("md", _read_markdown),
    ".markdown": ("md", _read_markdown),
    ".html": ("html", _read_html),
    ".htm": ("html", _read_html),
    ".docx": ("docx", _read_docx),
    ".pdf": ("pdf", _read_pdf),
    ".pptx": ("pptx", _read_pptx),
    ".xlsx": ("xlsx", _read_xlsx),
    ".epub": ("epub", _read_epub),
    **{suffix: ("image", _read_image) for suffix in IMAGE_SUFFIXES},
}

SUPPORTED_SUFFIXES = tuple(READERS)


# --------------------------------------------------------------------------- metadata


def iso_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` of a date written any usual way (``2024-07-11``, ``2024/7/11``,
    ``2024年7月11日``, an ISO time stamp, a ``datetime``), or None when it holds no real day."""
    if hasattr(value, "year") and hasattr(value, "month") and hasattr(value, "day"):
        value = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    m = _DATE.search(str(value or "")[:100])
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    try:
        import datetime

        return datetime.date(y, mo, d).isoformat() if 1900 <= y <= 2200 else None
    except ValueError:
        return None


def _properties(created: Any, keywords: Any) -> dict[str, Any]:
    """A DOCX's or PDF's own date and keywords (as tags), where set. Its "author" property is
    left alone: it names whoever's account saved the file far more often than a writer."""
    out: dict[str, Any] = {}
    day = iso_date(created) if created else None
    if day:
        out["date"] = day
    if isinstance(keywords, str) and keywords.strip():
        out["tags"] = split_tags(keywords)[:50]
    return out


_DATE = re.compile(
    r"(\d{4})\s*[-/年.]\s*(\d{1,2})\s*[-/月.]\s*(\d{1,2})\s*日?(?:\s*(\d{1,2}:\d{2}(?::\d{2})?))?"
)
# a value ends at white space, a bar, or the next field's label (OCR drops the spaces between fields:
# "来源:百度文库编辑:中财网时间:2024/07/11")
_LABELS = "来源|出处|稿源|责任编辑|编辑|责编|作者|撰文|发布时间|发表时间|发布日期|时间|日期"
_VALUE = rf"([^\s|｜]+?)(?=(?:{_LABELS})\s*[:：]|[\s|｜]|$)"
_FIELD = {
    "source": re.compile(r"(?:来源|出处|稿源)\s*[:：]\s*(?!https?://)" + _VALUE),
    "editor": re.compile(r"(?:责任编辑|编辑|责编)\s*[:：]\s*" + _VALUE),
    "author": re.compile(r"(?:作者|撰文|文)\s*[:：/]\s*" + _VALUE),
    "date_field": re.compile(r"(?:发布时间|发表时间|发布日期|时间|日期)\s*[:：]\s*([^|｜]+)"),
}
_ROLE_END = (
    "长", "记", "员", "任", "委", "授", "者", "师", "席", "理", "官", "编", "部", "处", "局", "厅", "院", "所",
    "校", "会", "办", "司", "社", "站", "队", "组", "室", "生", "家", "人",
)
_AUTHOR_LINE = re.compile(r"^(?P<position>\S.{1,60}?)\s+(?P<name>[\u4e00-\u9fff·]{2,4})$")


_URL = re.compile(r"https?://[^\s<>\"'“”‘’（）()【】\[\]，。；、]+", re.I)
_URL_LINE = re.compile(r"(?:原文|原文链接|原文地址|链接|网址|来源|出处|URL|url|Source|source)\s*[:：]")


def first_url(text: str) -> str | None:
    """The first http(s) URL in ``text``, without trailing punctuation."""
    m = _URL.search(text)
    return m.group(0).rstrip(".,;:!?") if m else None


def extract_meta(header_lines: list[str], tail: list[str] = ()) -> dict[str, str]:
    """Metadata found in the header block: source, editor, author, author position, date,
    and the document's URL (from a 来源/原文/链接 line of the header, or of the last lines)."""
    meta: dict[str, str] = {}
    for line in list(header_lines) + list(tail):
        if "url" not in meta and _URL_LINE.search(line) and first_url(line):
            meta["url"] = first_url(line)
    for line in header_lines:
        for key, rx in _FIELD.items():
            m = rx.search(line)
            if m and key not in meta:
                meta[key] = m.group(1).strip()
    raw_date = meta.pop("date_field", None)
    for candidate in [raw_date] + header_lines:
        if not candidate:
            continue
        m = _DATE.search(candidate)
        if m:
            y, mo, d, t = m.groups()
            meta["date"] = f"{int(y):04d}-{int(mo):02d}-{int(d):02d}"
            if t:
                meta["time"] = t
            break
    if "author" not in meta:
        for line in header_lines[1:]:
            s = line.strip()
            if ":" in s or "：" in s:
                continue
            m = _AUTHOR_LINE.match(s)
            if m and m.group("position").rstrip().endswith(_ROLE_END):
                meta["author"] = m.group("name")
                meta["author_position"] = m.group("position").strip()
                break
    return meta


# --------------------------------------------------------------------------- documents


def too_large(name: str, size: int, limit: int, hint: str = " (raise it with --max-file-mb)") -> DocumentError:
    """The one message for a file over the size limit."""
    return DocumentError(f"{name}: {size / 1048576:.1f} MB is over the {limit / 1048576:.0f} MB limit{hint}")


def doc_id_for(relpath: str) -> str:
    """Stable id of a document: from its path relative to the corpus root."""
    return hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:12]


def content_hash(raw: bytes) -> str:
    return hashlib.sha1(raw).hexdigest()


def read_document(
    path: str | Path, root: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
    raw: bytes | None = None, opts: ReadOptions = DEFAULT_READ,
) -> Document:
    """Read one file into a :class:`Document`. Raises :class:`UnsupportedFormat` or
    :class:`DocumentError` with a one-sentence message naming the file."""
    path = Path(path)
    rel = path.relative_to(root).as_posix() if root else path.name
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise UnsupportedFormat(
            f"{rel}: unsupported file type {suffix or '(none)'} (supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    if raw is None:
        try:
            size = path.stat().st_size
            if size > byte_limit(rel, max_bytes):
                raise too_large(rel, size, max_bytes)
            raw = path.read_bytes()
        except OSError as e:
            raise DocumentError(f"{rel}: cannot be read ({e.strerror or e})") from e
    return parse_document(raw, rel, max_bytes=max_bytes, opts=opts)


# Sentences: an image whose OCR holds none is a screenshot or a photo, titled by its file name (its
# first OCR line is a button or a caption); one that holds them is a scanned page, titled by its first line
_PROSE = re.compile(r"[。！？]|[a-z]{2,}[.!?](?:\s|$)")


def parse_document(raw: bytes, rel: str, max_bytes: int = DEFAULT_MAX_BYTES,
                   opts: ReadOptions = DEFAULT_READ) -> Document:
    suffix = Path(rel).suffix.lower()
    if suffix not in READERS:
        raise UnsupportedFormat(f"{rel}: unsupported file type {suffix or '(none)'}")
    if len(raw) > byte_limit(rel, max_bytes):
        raise too_large(rel, len(raw), max_bytes)
    if not raw.strip():
        raise DocumentError(f"{rel}: empty file")
    fmt, reader = READERS[suffix]
    read = reader(raw, rel, opts)
    original, encoding, title, warnings, format_meta = read.text, read.encoding, read.title, read.warnings, read.meta
    text, offsets = normalize(original)
    if not text.strip():
        raise DocumentError(f"{rel}: no text found")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    first = lines[0].lstrip("#").strip() if lines else ""
    if not title:
        title = first if 0 < len(first) <= 80 and (fmt != "image" or _PROSE.search(text)) else Path(rel).stem
    meta: dict[str, Any] = extract_meta(lines[: header_line_count(lines)], tail=lines[-5:])
    for key, value in read.props.items():  # the file's properties, where the header says nothing
        meta.setdefault(key, value)
    meta.update(format_meta)
    if read.marks:
        meta[locators.KEY] = locators.encode(read.unit, [(offsets.to_normalized(o), n, ocr)
                                                         for o, n, ocr in read.marks], read.labels)
    if read.code:
        meta[CODE_KEY] = [[offsets.to_normalized(a), offsets.to_normalized(b)] for a, b in read.code if b > a]
    if read.headings:
        meta[HEADINGS_KEY] = [[offsets.to_normalized(a), offsets.to_normalized(b), level]
                              for a, b, level in read.headings if b > a]
    return Document(
        doc_id=doc_id_for(rel),
        path=rel,
        title=title,
        text=text,
        original=original,
        offsets=offsets,
        meta=meta,
        content_hash=content_hash(raw),
        encoding=encoding,
        format=fmt,
        warnings=list(warnings),
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable_name(name: str) -> str:
    """A file name as kb stores and shows it: bytes that are not UTF-8 (which Python keeps as
    surrogates) and control characters written as ``\\xNN``; any other name unchanged. It is
    a function of the name's bytes, so the document keeps its id from run to run."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", name)


def _file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is (FIFOs, sockets and devices are never read)."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "not a regular file"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_files(root: str | Path, unreadable: list[str] | None = None,
               skipped: list[tuple[str, str]] | None = None) -> list[tuple[str, str, object]]:
    """``(relative POSIX path, full path, os.stat_result or the OSError of stat)`` of every
    regular file under ``root``, sorted by the relative path. The folder is a boundary: a link
    is followed only to a file inside it (linked folders are not followed: no loops), and
    FIFOs, sockets and devices are never opened; those, with why, go to ``skipped``. Hidden
    files and folders are left out; folders that cannot be listed are appended to
    ``unreadable`` (``"."`` for the root). Relative paths are :func:`printable_name` s. One
    pass of ``os.scandir`` with plain strings (a scan of a library of 50,000 files should not
    spend its time building path objects)."""
    base = os.fspath(root)
    real_root = os.path.realpath(base)
    found: list[tuple[str, str, object]] = []
    stack: list[tuple[str, str]] = [(base, "")]
    while stack:
        folder, rel_dir = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            if unreadable is not None:
                unreadable.append(rel_dir or ".")
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = f"{rel_dir}/{printable_name(name)}" if rel_dir else printable_name(name)
            try:
                link = entry.is_symlink()
                is_dir = entry.is_dir()
            except OSError:
                link, is_dir = False, False
            if is_dir:
                if not link:
                    stack.append((entry.path, rel))
                elif skipped is not None:  # as os.walk: a linked folder is not followed (no loops)
                    skipped.append((rel, "a link to a folder, not followed (link its files instead, inside the "
                                         "library)"))
                continue
            if link and not _inside(os.path.realpath(entry.path), real_root):
                if skipped is not None:
                    skipped.append((rel, "a link to a file outside the library folder"))
                continue
            try:
                st: object = entry.stat()
            except OSError as e:  # a link whose target is gone, a file that vanished
                st = e
            else:
                kind = _file_kind(st.st_mode)
                if kind is not None:
                    if skipped is not None:
                        skipped.append((rel, kind))
                    continue
            found.append((rel, entry.path, st))
    found.sort(key=lambda f: f[0])
    return found


def read_regular(path: str, name: str, limit: int, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, read no further than ``limit`` (the size
    limit holds while reading, whatever the file's size said). Opened without blocking and
    checked after opening: a FIFO or device put in its place is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = _file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise DocumentError(f"{name}: {kind}, not read")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise too_large(name, total, max_bytes)
    finally:
        os.close(fd)
