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

import math
import re
from dataclasses import dataclass

from .textproc import sentence_spans, trim_span
from .types import Document, Passage

DEFAULT_MAX_CHARS = 480
# Paragraphs shorter than this (web-page lines, captions) are packed with their neighbours
# under the same heading, up to DEFAULT_MAX_CHARS: a 10-character line is no passage.
DEFAULT_MIN_CHARS = 60

_CN = "零〇一二三四五六七八九十百千两"
CN_NUMERALS = [
    "一", "二", "三", "四", "五", "六", "七", "八", "九", "十",
    "十一", "十二", "十三", "十四", "十五", "十六", "十七", "十八", "十九", "二十",
]

# --------------------------------------------------------------------------- headings


@dataclass(frozen=True)
class HeadingMatch:
    kind: str  # which numbering family: "md", "chapter", "cn", "cn_paren", "num", "num_paren", ...
    level: int  # only meaningful for markdown
    marker_end: int  # where the numbering marker ends in the line


_HEADING_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("part", re.compile(rf"^第[{_CN}\d]+(?:编|篇|部分)(?=\s|$|[:：、,，.．])")),
    ("chapter", re.compile(rf"^第[{_CN}\d]+章(?=\s|$|[:：、,，.．]|[\u4e00-\u9fff])")),
    ("section", re.compile(rf"^第[{_CN}\d]+节(?=\s|$|[:：、,，.．]|[\u4e00-\u9fff])")),
    ("article", re.compile(rf"^第[{_CN}\d]+条(?=\s|$|[:：、,，.．])")),
    ("cn", re.compile(rf"^[{_CN}]+\s*、")),
    ("cn_paren", re.compile(rf"^[（(]\s*[{_CN}]+\s*[）)]")),
    ("num", re.compile(r"^\d{1,3}(?:[.．](?!\d)|、)")),
    ("num_paren", re.compile(r"^[（(]\s*\d{1,3}\s*[）)]")),
]
_MD = re.compile(r"^(#{1,6})\s+\S")

HEADING_MAX_CHARS = 40
_FIRST_CLAUSE_END = re.compile(r"[。！？!?；;]|[:：](?!\d)")


def heading_match(line: str) -> HeadingMatch | None:
    """The numbering family a line starts with, if any (markdown ``#`` included)."""
    m = _MD.match(line)
    if m:
        return HeadingMatch("md", len(m.group(1)), len(m.group(1)))
    for kind, rx in _HEADING_PATTERNS:
        m = rx.match(line)
        if m:
            return HeadingMatch(kind, 0, m.end())
    return None


def heading_label(line: str) -> tuple[HeadingMatch, str, bool] | None:
    """If ``line`` is (or starts with) a heading, return ``(match, label, standalone)``.

    A short line with a numbering marker is a heading on its own (``standalone``). A long
    one that starts with a marker (``（一）加强组织领导。各地要…``) is a paragraph whose
    first clause is its heading. A numbered line whose first clause is long is neither.
    """
    hm = heading_match(line)
    if hm is None:
        return None
    if hm.kind == "md":
        return hm, line.lstrip("#").strip(), True
    body = line[hm.marker_end:]
    if len(line) <= HEADING_MAX_CHARS and not re.search(r"[。！？!?]", body[:-1]):
        return hm, line.rstrip("。；;：: "), True
    if hm.kind == "article":
        return hm, line[: hm.marker_end].strip(), False
    m = _FIRST_CLAUSE_END.search(line, hm.marker_end)
    if m and m.start() <= HEADING_MAX_CHARS and m.start() > hm.marker_end:
        return hm, line[: m.start()].strip(), False
    return None


class HeadingStack:
    """The current heading path. A numbering family already on the stack closes
    everything below it (the next ``二、`` replaces ``一、`` and its ``（一）``); a new
    family nests under the current one; markdown levels nest by depth."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, str]] = []

    def push(self, hm: HeadingMatch, label: str) -> None:
        if hm.kind == "md":
            while self.items and not (self.items[-1][0] == "md" and self.items[-1][1] < hm.level):
                self.items.pop()
        else:
            for i, (kind, _, _) in enumerate(self.items):
                if kind == hm.kind:
                    del self.items[i:]
                    break
        self.items.append((hm.kind, hm.level, label))

    def labels(self) -> list[str]:
        return [label for _, _, label in self.items]


# --------------------------------------------------------------------------- inline enumerations

_CLAUSE_BEFORE = set("。；;！!？?：:，,”’」』）)\n")
_LABEL_END = re.compile(r"[。；;！!？?：:，,]")
POINT_LABEL_MAX = 30


def _ordinal_families() -> list[tuple[str, list[re.Pattern]]]:
    fams: list[tuple[str, list[re.Pattern]]] = []
    for suffix in ("要", "是", "方面"):
        fams.append((suffix, [re.compile(re.escape(cn) + suffix) for cn in CN_NUMERALS]))
    fams.append(("第", [re.compile(f"第{cn}(?:[，,、：:]|是|要|条)") for cn in CN_NUMERALS]))
    fams.append(("其", [re.compile(f"其{cn}(?:[，,、：:]|是)") for cn in CN_NUMERALS[:10]]))
    fams.append(("circled", [re.compile(chr(0x2460 + i)) for i in range(20)]))
    fams.append(("num_paren", [re.compile(rf"[（(]{i}[）)]") for i in range(1, 21)]))
    fams.append(("cn_paren", [re.compile(f"[（(]{cn}[）)]") for cn in CN_NUMERALS]))
    return fams


_FAMILIES = _ordinal_families()
_SEQUENCE_WORDS = [re.compile("首先"), re.compile("其次"), re.compile("再次|然后"), re.compile("最后")]


def _at_clause_start(text: str, pos: int) -> bool:
    i = pos - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in _CLAUSE_BEFORE


def _find_marker(text: str, rx: re.Pattern, start: int) -> re.Match | None:
    for m in rx.finditer(text, start):
        if _at_clause_start(text, m.start()):
            return m
    return None


def _run(text: str, patterns: list[re.Pattern], optional_after: int | None = None) -> list[re.Match]:
    found: list[re.Match] = []
    pos = 0
    for i, rx in enumerate(patterns):
        m = _find_marker(text, rx, pos)
        if m is None:
            if optional_after is not None and i >= optional_after:
                continue
            break
        found.append(m)
        pos = m.end()
    return found


def find_points(text: str) -> list[tuple[int, int, str]]:
    """Items of the outermost inline enumeration in a paragraph, as ``(start, end, label)``.

    The enumeration whose first marker comes earliest wins (the others are nested inside
    its items); at least two items in order are needed. The last item runs to the end."""
    best: list[re.Match] = []
    for _, patterns in _FAMILIES:
        run = _run(text, patterns)
        if len(run) >= 2 and (not best or run[0].start() < best[0].start()
                              or (run[0].start() == best[0].start() and len(run) > len(best))):
            best = run
    seq = _run(text, _SEQUENCE_WORDS, optional_after=2)
    if len(seq) >= 2 and seq[0].group() == "首先" and seq[1].group() == "其次":
        if not best or seq[0].start() < best[0].start():
            best = seq
    points = []
    for i, m in enumerate(best):
        start = m.start()
        end = best[i + 1].start() if i + 1 < len(best) else len(text)
        while end > start and text[end - 1].isspace():
            end -= 1
        after = m.end()
        while after < end and (text[after] in "，,、：: " or _LABEL_END.match(text, after)):
            after += 1  # "首先，要…": the label runs past the marker's own comma
        stop = _LABEL_END.search(text, after, end)
        label_end = stop.start() if stop else end
        label = text[start: min(label_end, start + POINT_LABEL_MAX)].strip()
        points.append((start, end, label))
    return points


# --------------------------------------------------------------------------- chunks


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


def split_document(doc: Document, max_chars: int = DEFAULT_MAX_CHARS,
                   min_chars: int = DEFAULT_MIN_CHARS) -> list[Passage]:
    """All passages of ``doc`` in reading order (parents before their children)."""
    from .documents import header_line_count

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

    stack = HeadingStack()
    # A standalone heading with nothing under it (end of document, or the next heading is
    # not nested inside it) still becomes a passage, so that no text is lost.
    pending: tuple[int, int, list[str], int] | None = None
    for s, e in lines[n_header:]:
        line = text[s:e]
        head = heading_label(line)
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
