"""Pure presentation helpers shared by the CLI and the page: citations, the best
sentence, matched terms, and HTML highlighting that escapes first."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from kb.text.process import fold, sentence_spans
from kb.text.structure import heading_label

# Characters that mean something to markdown (links, images, emphasis, code, tables,
# Streamlit's :colour[...] directives and $math$) or to HTML. Written as numeric entities,
# they display as themselves but can never form markup: document text stays text.
_MARKUP_CHARS = "&<>\"'`*_[](){}!#|~$:\\+-=.^@/"
_ENTITY = {ord(c): f"&#{ord(c)};" for c in _MARKUP_CHARS}
_ENTITY[ord("\n")] = "&#10;"  # a literal blank line would end the HTML block that holds the text
_ENTITY[ord("\r")] = ""
# C0/C1 control characters (ESC starts terminal escape sequences), except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def text_html(text: str) -> str:
    """``text`` as inert HTML *and* inert markdown: safe inside ``st.markdown`` (with or
    without ``unsafe_allow_html``), ``st.error`` and any HTML attribute. Control
    characters are dropped."""
    return _CONTROL.sub("", text or "").translate(_ENTITY)


def terminal_text(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (escape sequences, bidi
    overrides) are replaced by U+FFFD, tabs and newlines kept."""
    return _CONTROL.sub("\ufffd", text or "")


# what filters and facets are called where a person reads them (the CLI, the page)
FIELD_LABELS = {"source": "来源", "author": "作者", "year": "年份", "folder": "文件夹", "type": "类型", "tag": "标签"}


def meta_line(meta: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """Where a document comes from, in one line: ``作者 董清河 · 来源 百度文库 · 2024-07-11 ·
    标签 社保、民生`` (plain text: escape it for HTML with :func:`text_html`)."""
    labels = {"author": "作者 ", "source": "来源 ", "date": "", "tags": "标签 "} if labels is None else labels
    shown = []
    for key in labels:
        value = meta.get(key)
        if isinstance(value, list):
            value = "、".join(str(v) for v in value)
        if value:
            shown.append(labels[key] + str(value))
    return " · ".join(shown)


def place_label(locator: str, ocr: bool) -> str:
    """Where a passage is in its file, as the CLI shows it: ``第2页 · OCR``."""
    return " · ".join(x for x in (locator, "OCR" if ocr else "") if x)


def heading_trail(heading_path: Sequence[str], sep: str = " › ") -> str:
    return sep.join(h for h in heading_path if h)


def matched_terms(query_tokens: Sequence[str], text: str) -> list[str]:
    """Query terms found in ``text`` (folded), in query order, longest first when one
    contains another so that highlighting prefers whole words."""
    folded = fold(text)
    seen: dict[str, None] = {}
    for tok in query_tokens:
        if tok and tok in folded:
            seen[tok] = None
    return list(seen)


def best_sentence(text: str, terms: Sequence[str], weight: Callable[[str], float] | None = None,
                  query: str = "") -> str:
    """The sentence of ``text`` that best matches: most query-term weight (idf), ties
    broken by shared characters with the query, then by position."""
    spans = sentence_spans(text)
    if not spans:
        return text.strip()
    qchars = set(fold(query)) - set(" ，,。？?！!")
    best, best_score = spans[0], (-1.0, -1.0)
    for s, e in spans:
        sent = fold(text[s:e])
        lex = sum((weight(t) if weight else 1.0) for t in terms if t in sent)
        chars = len(qchars & set(sent)) / (len(qchars) or 1)
        score = (lex, chars)
        if score > best_score:
            best, best_score = (s, e), score
    return text[best[0]: best[1]]


def highlight_html(text: str, terms: Sequence[str], sentence: str = "", mark_class: str = "kb-term",
                   sentence_class: str = "kb-best") -> str:
    """``text`` as safe HTML: every character escaped, matched ``terms`` wrapped in
    ``<mark>``, the best ``sentence`` wrapped in ``<span>``. Matching runs on the raw
    text, escaping on every piece, so document content can never inject markup."""
    if not text:
        return ""
    n = len(text)
    is_term = [False] * n
    folded = fold(text)
    if len(folded) == n:  # NFKC may change the length (rare ligatures); then skip term marks
        for term in sorted(set(terms), key=len, reverse=True):
            if not term:
                continue
            for m in re.finditer(re.escape(term), folded):
                for i in range(m.start(), m.end()):
                    is_term[i] = True
    in_sent = [False] * n
    if sentence:
        pos = text.find(sentence)
        if pos >= 0:
            for i in range(pos, pos + len(sentence)):
                in_sent[i] = True
    out = []
    i = 0
    while i < n:
        j = i
        while j < n and is_term[j] == is_term[i] and in_sent[j] == in_sent[i]:
            j += 1
        piece = text_html(text[i:j])
        if is_term[i]:
            piece = f'<mark class="{mark_class}">{piece}</mark>'
        out.append((in_sent[i], piece))
        i = j
    # merge the sentence wrapper around consecutive pieces
    html_out = []
    open_sent = False
    for sent, piece in out:
        if sent and not open_sent:
            html_out.append(f'<span class="{sentence_class}">')
            open_sent = True
        if not sent and open_sent:
            html_out.append("</span>")
            open_sent = False
        html_out.append(piece)
    if open_sent:
        html_out.append("</span>")
    return "".join(html_out)


def terminal_highlight(text: str, terms: Sequence[str]) -> str:
    """Bold matched terms with ANSI codes (for a terminal)."""
    if not terms:
        return text
    rx = re.compile("|".join(re.escape(t) for t in sorted(set(terms), key=len, reverse=True)), re.I)
    return rx.sub(lambda m: f"\033[1;33m{m.group()}\033[0m", text)


def document_html(text: str, focus: tuple[int, int] | None = None, focus_class: str = "kb-focus-inline",
                  heading_class: str = "kb-heading") -> str:
    """A whole document as escaped HTML, one ``<p>`` per line; the ``focus`` span (offsets
    into ``text``) wrapped in ``<mark>`` even where it crosses lines; heading lines marked."""
    out = []
    pos = 0
    for line in text.split("\n"):
        start, end = pos, pos + len(line)
        pos = end + 1
        if not line.strip():
            continue
        if focus and focus[0] < end and focus[1] > start:
            a, b = max(focus[0], start) - start, min(focus[1], end) - start
            body = (text_html(line[:a]) + f'<mark class="{focus_class}">' + text_html(line[a:b]) + "</mark>"
                    + text_html(line[b:]))
        else:
            body = text_html(line)
        head = heading_label(line.strip())
        cls = f' class="{heading_class}"' if head is not None and head[2] else ""
        out.append(f"<p{cls}>{body}</p>")
    return "".join(out)
