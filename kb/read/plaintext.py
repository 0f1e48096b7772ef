"""Hard-wrapped plain text back into paragraphs (pure).

Text exported from manuals (``man``, ``w3m -dump``, ``pandoc -t plain``, e-mail) is cut into lines of
a fixed width: left alone, every line would be a paragraph of its own, cut mid-sentence. A file is
hard-wrapped when many of its lines end near one width (:func:`wrap_width`); then a line continues
the one before it when that one ran to the width and the line starts where the paragraph's
continuation lines start (:func:`reflow`). A paragraph ends at a blank line, a line that is shorter
than the width (the last of its paragraph), or a change of indentation (a list item, a code block).
Lines inside fenced code (```` ``` ````) and prompt lines (``$ ``, ``# ``) are never joined.
"""

from __future__ import annotations

import re

from kb.text.structure import heading_match, join_wrapped, wide

MIN_WRAPPED_LINES = 8  # fewer lines at the width than this: the file is not hard-wrapped
MAX_WRAP_WIDTH = 120  # display columns; wider "lines" are paragraphs a line
_BULLET = re.compile(r"^(?:[*+\-•·]|\d{1,3}[.)]|[（(]\d{1,3}[)）])\s+")
_MARK_BULLET = re.compile(r"^[*+\-•·]\s+")  # a bullet sign: always a new item (a number may be a wrap)
_SENTENCE_END = tuple("。！？!?；;：:.")
_PROMPT = re.compile(r"^(?:[$#%>] |\$$)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide and full-width characters two."""
    return sum(2 if wide(c) else 1 for c in text)


def wrap_width(lines: list[str]) -> int | None:
    """The width the text was wrapped at, or None when it was not hard-wrapped: the most
    common line width among the widest lines, held by at least a fifth of the non-blank
    lines (within 4 columns) and at most :data:`MAX_WRAP_WIDTH`."""
    widths = [display_width(ln.rstrip()) for ln in lines if ln.strip()]
    if len(widths) < MIN_WRAPPED_LINES:
        return None
    top = sorted(widths)[int(len(widths) * 0.95)]
    if top > MAX_WRAP_WIDTH or top < 30:
        return None
    near = sum(1 for w in widths if top - 4 <= w <= top)
    if near < max(MIN_WRAPPED_LINES, len(widths) // 5):
        return None
    return top


def _indent(line: str) -> int:
    return display_width(line[: len(line) - len(line.lstrip())])


def _first_word(text: str) -> str:
    """What a wrapping program could not break: a run of narrow characters, or one wide one."""
    for n, ch in enumerate(text):
        if ch.isspace() or wide(ch):
            return text[:n] or text[:1]
    return text


def reflow(text: str) -> str:
    """``text`` with the lines of each hard-wrapped paragraph joined (CJK without a space, Latin
    words with one); unchanged when the text is not hard-wrapped. Blank lines and the first
    line's indentation are kept, so the splitter sees the same paragraphs a reader does."""
    lines = text.split("\n")
    width = wrap_width(lines)
    if width is None:
        return text
    out: list[str] = []
    cont: set[int] = set()  # indents a continuation of the open paragraph may have
    open_para = para_head = False
    in_fence = False
    prev = ""
    for line in lines:
        body = line.strip()
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            open_para = False
            continue
        if in_fence or not body:
            out.append(line)
            open_para = False
            prev = line
            continue
        full = display_width(prev.rstrip()) + 1 + display_width(_first_word(body)) > width - 2
        head = heading_match(body, markdown=False)
        starts_entry = head is not None and para_head  # a numbered line after a numbered one: the next entry
        # a numbered item after a line that ends its sentence is the next item, else a wrapped "(5) 手册页"
        item = _MARK_BULLET.match(body) or (_BULLET.match(body) and prev.rstrip().endswith(_SENTENCE_END))
        if open_para and full and _indent(line) in cont and not item and not starts_entry \
                and not _PROMPT.match(body) and not _PROMPT.match(prev.strip()):
            out[-1] = join_wrapped(out[-1], body)
            cont = {_indent(line)}
            prev = line
            continue
        out.append(line.rstrip())
        para_head = head is not None
        bullet = _BULLET.match(body)
        cont = {_indent(line)} | ({_indent(line) + display_width(bullet.group())} if bullet else set())
        open_para = True
        prev = line
    return "\n".join(out)
