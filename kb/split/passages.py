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

from kb.records import CODE_KEY, CONTENTS_KIND, HEADINGS_KEY, Document, Passage
from kb.text.process import sentence_spans, trim_span
from kb.text.structure import (  # noqa: F401 - re-exported: the splitter's rules live in kb.structure
    CN_NUMERALS,
    CONTENTS_TITLE,
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


CONTENTS_ENTRY_MAX_CHARS = 160
_PAGE_REF = re.compile(r"(?:[.…·．]{3,}|\s)\s*\d{1,4}$")  # "前言 ………… 3": an entry's page number


def _entry_key(line: str) -> str:
    return "".join(_PAGE_REF.sub("", line.lstrip("#")).split())


def contents_blocks(text: str, lines: list[tuple[int, int]], markdown: bool,
                    skip: set[int] = frozenset()) -> list[tuple[int, int]]:
    """Runs of ``lines`` (index ranges ``[i, j)``) that are a table of contents, not headings:
    consecutive numbered lines (``1.2. …``, ``第 2 章 …``) or lines ending in a page number
    (``前言……3``), three or more of which come back later in the document as its headings; five or
    more in two numberings or more (``2.`` and ``2.1.``: the outline of sections held elsewhere); or
    two or more under a ``目录`` line (which belongs to the run). A short flat numbered list whose
    items do not come back is not one. Markup headings (``#``) and lines in ``skip`` (code) never are."""
    def entry(i: int) -> str | None:
        """The numbering an entry line has ("page" for a page-numbered one), else None."""
        if i in skip:
            return None
        line = text[lines[i][0]:lines[i][1]]
        if len(line) > CONTENTS_ENTRY_MAX_CHARS:
            return None
        head = heading_match(line, markdown)
        if head is not None:
            return None if head.kind == "md" else head.kind
        return "page" if _PAGE_REF.search(line) else None

    last_seen = {_entry_key(text[s:e]): i for i, (s, e) in enumerate(lines)}
    blocks: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        titled = bool(CONTENTS_TITLE.match(text[lines[i][0]:lines[i][1]]))
        j = i + 1 if titled else i
        kinds = set()
        while j < len(lines) and (kind := entry(j)) is not None:
            kinds.add(kind)
            j += 1
        first = i + 1 if titled else i
        n = j - first
        recurring = sum(last_seen[_entry_key(text[s:e])] >= j for s, e in lines[first:j])
        if (titled and n >= 2) or (n >= 3 and recurring >= max(3, n // 2)) or (n >= 5 and len(kinds) >= 2):
            blocks.append((i, j))
            i = j
        else:
            i = max(i + 1, j)
    return blocks


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
                add(CONTENTS_KIND if kind == CONTENTS_KIND else "chunk", path, cs, ce, p.id)
        return p

    # short plain paragraphs waiting to be packed: (start, end, heading path)
    group: list[tuple[int, int]] = []
    group_path: list[str] = []

    def flush() -> None:
        if group:
            add_unit("paragraph", group_path, group[0][0], group[-1][1], None)
            group.clear()

    n_header = header_line_count([text[s:e] for s, e in lines])
    # headings the file marks itself (a PDF's outline, type sizes): these lines, and no guessed ones;
    # the header block ends at the first of them after the title line
    marked = {int(a): int(level) for a, _, level in doc.meta.get(HEADINGS_KEY) or ()}
    n_header = next((i for i in range(1, n_header) if lines[i][0] in marked), n_header)
    # The header is a passage when it holds more than the title (source, date, author...),
    # or when it is all there is; a bare title already heads every passage.
    if n_header and (n_header > 1 or n_header == len(lines)):
        add("header", [doc.title], lines[0][0], lines[n_header - 1][1], None)

    # ``#`` headings are markup that Markdown has and the HTML, DOCX, PPTX, XLSX and EPUB readers
    # write; in plain text and PDFs such a line is text (a root prompt, a shell comment)
    markdown = doc.format not in PLAIN_FORMATS
    code = sorted((int(a), int(b)) for a, b in doc.meta.get(CODE_KEY) or ())  # <pre> blocks: no headings
    code_starts = [a for a, _ in code]

    def code_block(pos: int) -> int | None:
        i = bisect.bisect_right(code_starts, pos) - 1
        return i if i >= 0 and pos < code[i][1] else None

    if code:  # the lines of one code block are one unit: code is never cut line by line
        units: list[tuple[int, int]] = []
        last_block = None
        for s, e in lines[n_header:]:
            block = code_block(s)
            if block is not None and block == last_block:
                units[-1] = (units[-1][0], e)
            else:
                units.append((s, e))
            last_block = block
        lines = lines[:n_header] + units

    body = lines[n_header:]
    contents = {i: j for i, j in contents_blocks(text, body, markdown,
                                                 {i for i, (s, _) in enumerate(body)
                                                  if code and code_block(s) is not None})}
    def heading_of(s: int, e: int) -> tuple[HeadingMatch, str, bool] | None:
        if code and code_block(s) is not None:
            return None
        if marked:
            return (HeadingMatch("md", marked[s], 0), text[s:e], True) if s in marked else None
        return heading_label(text[s:e], markdown)

    stack = HeadingStack()
    # A standalone heading with nothing under it (end of document, or the next heading is
    # not nested inside it) still becomes a passage, so that no text is lost.
    pending: tuple[int, int, list[str], int] | None = None
    skip_to = 0
    for i, (s, e) in enumerate(body):
        if i < skip_to:
            continue
        if i in contents:  # a table of contents: one passage of its own, none of its entries a heading
            flush()
            if pending is not None:
                add_unit("paragraph", pending[2], pending[0], pending[1], None)
                pending = None
            skip_to = contents[i]
            add_unit(CONTENTS_KIND, [doc.title] + stack.labels(), s, body[skip_to - 1][1], None)
            continue
        line = text[s:e]
        head = heading_of(s, e)
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
        # a short lead-in ending in "：" stays with the list, table or code it introduces
        lead_in = group and size < max_chars and text[group[-1][1] - 1] in "：:"
        if group and (path != group_path or (not lead_in and (size >= min_chars or e - group[0][0] > max_chars))):
            flush()
        if not group:
            group_path = path
        group.append((s, e))
    flush()
    if pending is not None:
        add_unit("paragraph", pending[2], pending[0], pending[1], None)
    return passages
