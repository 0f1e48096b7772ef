"""What every front end shows: the CLI (text and ``--json``), the page and any API render
these objects and nothing else. The search layer builds them (:mod:`kb.search.searcher`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kb.present.cite import Reference, cite


@dataclass
class PassageView:
    """One passage as shown: a search hit, a related passage, or a passage on its own.
    ``kb search --json`` lists ``asdict`` of these."""

    id: str
    doc_id: str
    title: str
    heading_path: list[str]
    text: str
    score: float
    scores: dict[str, float]
    best_sentence: str
    matched_terms: list[str]
    citation: str  # in the style asked for (kb's short form by default)
    kind: str = "paragraph"
    parent: str | None = None
    path: str = ""
    context: list[str] = field(default_factory=list)  # ids of related passages kept as context
    # How well the passage supports the query, 0-1: the IDF-weighted share of the query's
    # words it holds (see kb.rank.fusion.support); 0 for passages not found by a query.
    support: float = 0.0
    meta: dict[str, str] = field(default_factory=dict)  # author, source, date, url ... of its document
    # Where in the file: 第3页 / 第3–4页 / 第5张幻灯片 / 第12–20行 ("" for formats without pages).
    locator: str = ""
    ocr: bool = False  # the passage's text (some of it) was read from a scan by OCR
    # synonyms (the library's) the passage holds: {synonym: the question's word it stands for}
    synonyms: dict[str, str] = field(default_factory=dict)
    cite_key: str = ""  # its document's BibTeX key / RIS ID, author-year-title (Reader.cite_key)

    @property
    def reference(self) -> Reference:
        return Reference.of(self.title, self.meta, self.heading_path, self.path, key=self.cite_key,
                            place=self.locator, doc=self.doc_id)

    def cited(self, style: str) -> PassageView:
        """The same view with its citation in another style."""
        return replace(self, citation=cite(self.reference, style))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Hit = PassageView  # the name search code has always used


@dataclass
class SearchResponse:
    """The answer to one question: what ``kb search --json`` prints and ``GET /search``
    returns. ``low_confidence``: nothing supports the question well (the relevance floor);
    ``truncated``: the question was cut to its first 512 characters; ``filters``: those the
    search was narrowed by; ``empty_because``: which filter allowed no document; ``facets``:
    documents of the passages the hits were ranked from (up to 100) per source, year,
    folder, type and tag. Each is left out
    when it does not apply."""

    query: str
    mode: str
    hits: list[PassageView]
    low_confidence: bool | None = None
    truncated: bool | None = None
    filters: dict[str, Any] | None = None
    empty_because: str | None = None
    facets: dict[str, dict[str, int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DocumentView:
    """One document's card: what it is and where it comes from (no text)."""

    doc_id: str
    path: str
    title: str
    meta: dict[str, str]
    format: str = ""
    n_passages: int = 0
    indexed_at: str = ""

    @property
    def reference(self) -> Reference:
        return Reference.of(self.title, self.meta, (), self.path, doc=self.doc_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
