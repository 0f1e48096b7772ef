"""The records that flow through kb: Document -> Passage (-> kb.present.views for display)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kb.text.process import OffsetMap

# How a search ranks: both channels fused, the dense model alone, or keywords (BM25) alone.
SEARCH_MODES = ("hybrid", "dense", "lexical")
# The key under which a document's metadata keeps its page/slide/row marks (kb.read.locators).
LOCATORS_KEY = "_locators"
CONTENTS_KIND = "toc"  # a table of contents: a passage of its own kind, never an answer ahead of the sections
HEADINGS_KEY = "_headings"  # headings the file itself marks (a PDF's outline): [[start, end, level], ...]
CODE_KEY = "_code"  # a document's spans of code (HTML <pre>), [[start, end], ...] in its text


@dataclass
class Document:
    """One source file, decoded and normalised.

    ``original`` is the decoded text exactly as in the file (after decoding only);
    ``text`` is the normalised text and ``offsets`` maps its positions back into
    ``original``, so any span of ``text`` can be pointed back into the original.
    """

    doc_id: str
    path: str  # relative to the corpus root, POSIX separators
    title: str
    text: str
    original: str
    offsets: OffsetMap
    meta: dict[str, str] = field(default_factory=dict)  # source, editor, date, author, author_position
    content_hash: str = ""
    encoding: str = "utf-8"
    format: str = "txt"
    warnings: list[str] = field(default_factory=list)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a ``[start, end)`` span of ``text`` to the span of ``original``."""
        return self.offsets.span(start, end)


@dataclass
class Passage:
    """A searchable unit: the document header, a paragraph, a sub-point or a chunk.

    ``start``/``end`` are offsets into the document's normalised text; ``orig_start``/
    ``orig_end`` point into the original text. ``parent`` is the id of the enclosing
    passage (a sub-point's paragraph), or ``None``.
    """

    id: str
    doc_id: str
    kind: str  # "header" | "paragraph" | "point" | "chunk" | "toc" (a table of contents)
    heading_path: list[str]
    text: str
    start: int
    end: int
    orig_start: int = 0
    orig_end: int = 0
    parent: str | None = None
    ordinal: int = 0
