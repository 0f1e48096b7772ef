"""The rules of Chinese document structure, shared by reading and splitting (pure).

- headings: ``一、`` / ``（一）`` / ``1.`` ``1、`` / ``（1）`` / ``第X章/节/条`` / markdown ``#``,
  and the stack of headings a line sits under;
- inline enumerations: ``一要…二要…``, ``一是…二是…``, ``第一，…``, ``首先…其次…最后…``,
  ``①②``, ``（1）（2）``;
- the header block at the top of a document (title, 来源 line, author line).

:mod:`kb.read.documents` and :mod:`kb.split.passages` both import from here, never from each other.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_CN = "零〇一二三四五六七八九十百千两"
CN_NUMERALS = [
    "一", "二", "三", "四", "五", "六", "七", "八", "九", "十",
    "十一", "十二", "十三", "十四", "十五", "十六", "十七", "十八", "十九", "二十",
]

# --------------------------------------------------------------------------- page furniture

# A line that is only a page number: "- 3 -", "— 12 —", "3", "第3页", "第 3 页 共 10 页", "3/10".
PAGE_NUMBER = re.compile(r"^[-—–\s]*(?:\d{1,4}|第\s*\d{1,4}\s*页(?:\s*[,，/]?\s*共\s*\d{1,4}\s*页)?|"
                         r"\d{1,4}\s*/\s*\d{1,4})[-—–\s]*$")


def glue(a: str, b: str) -> str:
    """Two pieces of one paragraph split by a line or page break: nothing between CJK
    characters, one space between Latin words."""
    if a and b and a[-1].isascii() and a[-1].isalnum() and b[0].isascii() and b[0].isalnum():
        return a + " " + b
    return a + b


def wide(ch: str) -> bool:
    """An East Asian wide or full-width character (CJK, full-width punctuation)."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def join_wrapped(a: str, b: str) -> str:
    """Two lines of one paragraph that a fixed width cut apart, laid out as CSS lays out a
    segment break: nothing between two wide (CJK) characters, one space otherwise."""
    a, b = a.rstrip(), b.lstrip()
    if not a or not b:
        return a + b
    return a + b if wide(a[-1]) and wide(b[0]) else a + " " + b


# --------------------------------------------------------------------------- headings


@dataclass(frozen=True)
class HeadingMatch:
    kind: str  # which numbering family: "md", "chapter", "cn", "cn_paren", "num", "num_paren", ...
    level: int  # only meaningful for markdown
    marker_end: int  # where the numbering marker ends in the line


_HEADING_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("part", re.compile(rf"^第 ?[{_CN}\d]+ ?(?:编|篇|部分)(?=\s|$|[:：、,，.．])")),
    ("chapter", re.compile(rf"^第 ?[{_CN}\d]+ ?章(?=\s|$|[:：、,，.．]|[\u4e00-\u9fff])")),
    ("section", re.compile(rf"^第 ?[{_CN}\d]+ ?节(?=\s|$|[:：、,，.．]|[\u4e00-\u9fff])")),
    ("article", re.compile(rf"^第 ?[{_CN}\d]+ ?条(?=\s|$|[:：、,，.．])")),
    # 1.2. / 1.2.3. (the kind names the depth, so 1.2.3. nests under 1.2. and 1.3. closes both)
    ("dotted", re.compile(r"^(?:\d{1,3}|[A-Z])(?:[.．]\d{1,3}){1,4}[.．](?=\s*\S)")),  # A.1. in an appendix
    ("appendix", re.compile(r"^附录\s?[A-Z\d一二三四五六七八九十]{1,3}(?:[.．、:：]|(?=\s|$))")),
    ("cn", re.compile(rf"^[{_CN}]+\s*、")),
    ("cn_paren", re.compile(rf"^[（(]\s*[{_CN}]+\s*[）)]")),
    ("num", re.compile(r"^\d{1,3}(?:[.．](?!\d)|、)")),
    ("num_paren", re.compile(r"^[（(]\s*\d{1,3}\s*[）)]")),
]
_MD = re.compile(r"^(#{1,6})\s+\S")

HEADING_MAX_CHARS = 40
_FIRST_CLAUSE_END = re.compile(r"[。！？!?；;]|[:：](?!\d)")


def heading_match(line: str, markdown: bool = True) -> HeadingMatch | None:
    """The numbering family a line starts with, if any (markdown ``#`` included unless
    ``markdown`` is False: in plain text a ``# `` line is a shell prompt or a comment)."""
    m = _MD.match(line) if markdown else None
    if m:
        return HeadingMatch("md", len(m.group(1)), len(m.group(1)))
    for kind, rx in _HEADING_PATTERNS:
        m = rx.match(line)
        if m:
            if kind == "dotted":
                kind = f"num{len(re.findall(r'[.．]', m.group()))}"
            elif kind == "appendix":
                kind = "chapter"  # 附录 A follows 第 9 章 as its sibling, not inside it
            return HeadingMatch(kind, 0, m.end())
    return None


def heading_label(line: str, markdown: bool = True) -> tuple[HeadingMatch, str, bool] | None:
    """If ``line`` is (or starts with) a heading, return ``(match, label, standalone)``.

    A short line with a numbering marker is a heading on its own (``standalone``). A long
    one that starts with a marker (``（一）加强组织领导。各地要…``) is a paragraph whose
    first clause is its heading. A numbered line whose first clause is long is neither.
    """
    hm = heading_match(line, markdown)
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


CONTENTS_TITLE = re.compile(r"^(?:目\s*录|目\s*次|contents|table of contents)$", re.I)  # a contents' own title


def header_line_count(lines: list[str]) -> int:
    """How many leading non-empty lines form the document's header block (title, source
    line, subtitle, author line): short lines that are not headings and end no sentence.
    The first line counts as the title whatever it looks like, when it is short."""
    n = 0
    for i, line in enumerate(lines[:12]):
        s = line.strip()
        if i > 0 and (heading_match(s) or CONTENTS_TITLE.match(s)):
            break
        if len(s) > 80 or (i > 0 and ("。" in s or len(s) > 50)):
            break
        n += 1
    return n
