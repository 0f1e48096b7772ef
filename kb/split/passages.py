"""Document -> passages that follow Chinese document structure.

Pure functions. A document becomes:

- a ``header`` passage: the lines before the body (title, ``来源:… 时间:…``, subtitle,
  author line), when there are any;
- a ``paragraph`` passage per paragraph, with the heading path it sits under
  (``一、`` / ``（一）`` / ``1.`` / ``（1）`` / ``第X章/节/条`` / markdown ``#``);
- a ``point`` passage, child of its paragraph, for each item of an inline enumeration
  (``一要…二要…``, ``一是…二是…``, ``第一，…第二，…``, ``首先…其次…最后…``, ``其一…``,
  ``①②``, ``（1）（2）``), its label (``二要创新方法``) appended to the heading path;
- ``chunk`` passages, children of any unit longer than ``max_chars``, cut at sentence ends.
"""

from __future__ import annotations

import bisect
import math
import re

from kb.records import CODE_KEY, Document, Passage
from kb.text.process import sentence_spans, trim_span
from kb.text.structure import (  # noqa: F401 - re-exported: the splitter's rules live in kb.structure
    CN_NUMERALS,
    HeadingMatch,
    HeadingStack,
    find_points,
    header_line_count,
    heading_label,
    heading_match,
)

DEFAULT_MAX_CHARS = 480
# Paragraphs shorter than this (web-page lines, captions) are packed with their neighbours
# under the same heading, up to DEFAULT_MAX_CHARS: a 10-character line is no passage.
DEFAULT_MIN_CHARS = 60

def chunk_spans(text: str, start: int, end: int, max_chars: int = DEFAULT_MAX_CHARS) -> list[tuple[int, int]]:
    """Cut ``text[start:end]`` into pieces of at most ``max_chars`` at sentence ends,
    balanced in length. A sentence longer than ``max_chars`` is cut at commas, then hard."""
    pieces: list[tuple[int, int]] = []
    for s, e in sentence_spans(text, start, end):
        if e - s <= max_chars:
            pieces.append((s, e))
            continue
        cs = s
        for m in re.finditer(r"[，,、]", text[s:e]):
            ce = s + m.end()
            if ce - cs >= max_chars // 2:
                pieces.extend(_hard_cut(cs, ce, max_chars))
                cs = ce
        if cs < e:
            pieces.extend(_hard_cut(cs, e, max_chars))
    if not pieces:
        return []
    total = pieces[-1][1] - pieces[0][0]
    n = max(1, math.ceil(total / max_chars))
    target = total / n
    chunks: list[tuple[int, int]] = []
    cs, ce = pieces[0]
    for s, e in pieces[1:]:
        if e - cs > max_chars or ce - cs >= target:
            chunks.append((cs, ce))
            cs = s
        ce = e
    chunks.append((cs, ce))
    return chunks


def _hard_cut(s: int, e: int, max_chars: int) -> list[tuple[int, int]]:
    return [(i, min(i + max_chars, e)) for i in range(s, e, max_chars)]


# --------------------------------------------------------------------------- documents


def _line_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    pos = 0
    for line in text.split("\n"):
        span = trim_span(text, pos, pos + len(line))
        pos += len(line) + 1
        if span:
            spans.append(span)
    return spans


def standalone_title(head, stack: HeadingStack, title: str) -> bool:
    """A heading line, before any other, that is the document's title."""
    return not stack.items and head[2] and " ".join(head[1].split()) == " ".join((title or "").split())


PLAIN_FORMATS = frozenset({"txt", "pdf", "image"})  # formats whose readers write no ``#`` headings


def split_document(doc: Document, max_chars: int = DEFAULT_MAX_CHARS,
                   min_chars: int = DEFAULT_MIN_CHARS) -> list[Passage]:
    """All passages of ``doc`` in reading order (parents before their children)."""
    text = doc.text
    lines = _line_spans(text)
    passages: list[Passage] = []

    def add(kind: str, path: list[str], s: int, e: int, parent: str | None) -> Passage:
        os_, oe = doc.original_span(s, e)
        p = Passage(
            id=f"{doc.doc_id}:{len(passages)}", doc_id=doc.doc_id, kind=kind, heading_path=list(path),
            text=text[s:e], start=s, end=e, orig_start=os_, orig_end=oe, parent=parent, ordinal=len(passages),
        )
        passages.append(p)
        return p

    def add_unit(kind: str, path: list[str], s: int, e: int, parent: str | None) -> Passage:
        p = add(kind, path, s, e, parent)
        if e - s > max_chars:
            for cs, ce in chunk_spans(text, s, e, max_chars):
                add("chunk", path, cs, ce, p.id)
        return p

    # short plain paragraphs waiting to be packed: (start, end, heading path)
    group: list[tuple[int, int]] = []
    group_path: list[str] = []

    def flush() -> None:
        if group:
            add_unit("paragraph", group_path, group[0][0], group[-1][1], None)
            group.clear()

    n_header = header_line_count([text[s:e] for s, e in lines])
    # The header is a passage when it holds more than the title (source, date, author...),
    # or when it is all there is; a bare title already heads every passage.
    if n_header and (n_header > 1 or n_header == len(lines)):
        add("header", [doc.title], lines[0][0], lines[n_header - 1][1], None)

    # ``#`` headings are markup that Markdown has and the HTML, DOCX, PPTX, XLSX and EPUB readers
    # write; in plain text and PDFs such a line is text (a root prompt, a shell comment)
    markdown = doc.format not in PLAIN_FORMATS
    code = sorted((int(a), int(b)) for a, b in doc.meta.get(CODE_KEY) or ())  # <pre> blocks: no headings
    code_starts = [a for a, _ in code]

    def in_code(pos: int) -> bool:
        i = bisect.bisect_right(code_starts, pos) - 1
        return i >= 0 and pos < code[i][1]

    stack = HeadingStack()
    # A standalone heading with nothing under it (end of document, or the next heading is
    # not nested inside it) still becomes a passage, so that no text is lost.
    pending: tuple[int, int, list[str], int] | None = None
    for s, e in lines[n_header:]:
        line = text[s:e]
        head = heading_label(line, markdown) if not (code and in_code(s)) else None
        if head is not None and standalone_title(head, stack, doc.title):
            continue  # the document's title again (a page's <h1> after its navigation): it heads every path
        if head is not None:
            flush()
            hm, label, standalone = head
            stack.push(hm, label)
            if pending is not None and len(stack.items) <= pending[3]:
                add_unit("paragraph", pending[2], pending[0], pending[1], None)
            pending = None
            if standalone:
                pending = (s, e, [doc.title] + stack.labels()[:-1], len(stack.items))
                continue
        pending = None
        path = [doc.title] + stack.labels()
        points = find_points(line)
        if points:
            flush()
            para = add("paragraph", path, s, e, None)
            for ps, pe, label in points:
                add_unit("point", path + [label], s + ps, s + pe, para.id)
            continue
        size = group[-1][1] - group[0][0] if group else 0
        if group and (size >= min_chars or (e - group[0][0]) > max_chars or path != group_path):
            flush()
        if not group:
            group_path = path
        group.append((s, e))
    flush()
    if pending is not None:
        add_unit("paragraph", pending[2], pending[0], pending[1], None)
    return passages
