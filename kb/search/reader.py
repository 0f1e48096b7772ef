"""A snapshot read for people: passages with their families, documents, citations, the
``kb stats`` summary — what every front end shows around a search result."""

from __future__ import annotations

from typing import Any

from kb.errors import UnknownPassage
from kb.present.cite import Reference, citation_key, cite
from kb.present.render import best_sentence, matched_terms
from kb.present.views import DocumentView, Hit
from kb.read.locators import locate, public_meta
from kb.store.base import Snapshot
from kb.text.vocabulary import Vocabulary


class Reader:
    """Passages, documents and citations of one snapshot (no ranking: see
    :class:`kb.search.searcher.Searcher`)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.manifest = snapshot.manifest
        self.spec = snapshot.manifest["embedder"]
        # the library's own words and synonyms, as its index recorded them (kb.text.vocabulary)
        self.vocabulary = Vocabulary.of_manifest(self.manifest)
        self.docs = snapshot.docs
        self.doc_by_id = snapshot.doc_by_id
        self._cite_keys: dict[str, str] | None = None  # made on the first citation

    @property
    def location(self) -> str:
        """Where the library lives."""
        return self.snapshot.location

    @property
    def count(self) -> int:
        """Live passages."""
        return self.snapshot.n_live

    @property
    def version(self) -> str:
        """What the store called live when this snapshot was opened."""
        return self.snapshot.version

    def is_stale(self) -> bool:
        """True when a newer version has been published since this one was loaded."""
        return self.snapshot.is_stale()

    def passage(self, passage_id: str) -> dict[str, Any]:
        found = self.snapshot.by_ids([passage_id])
        if passage_id not in found:
            raise UnknownPassage(f"no passage with id {passage_id!r} in {self.location}/ — "
                                 "ids look like 4ef17b4da2ce:12 (see `kb search --json`)")
        return found[passage_id]

    def _ancestors(self, rows: dict[int, dict[str, Any]]) -> dict[str, list[str]]:
        """``{passage id: [parent id, grandparent id, ...]}`` for the given rows."""
        parent_of = {r["id"]: r["parent"] for r in rows.values()}
        missing = {p for p in parent_of.values() if p and p not in parent_of}
        while missing:
            fetched = self.snapshot.by_ids(missing)
            for pid, r in fetched.items():
                parent_of[pid] = r["parent"]
            missing = {p for p in (r["parent"] for r in fetched.values()) if p and p not in parent_of}
        out = {}
        for r in rows.values():
            chain, p = [], r["parent"]
            while p:
                chain.append(p)
                p = parent_of.get(p)
            out[r["id"]] = chain
        return out

    # ------------------------------------------------------------------ views
    def _hit(self, r: dict[str, Any], query: str, qtokens: list[str], score: float, scores: dict[str, float],
             context: list[str]) -> Hit:
        doc = self.doc_by_id[r["doc_id"]]
        terms = matched_terms(qtokens, " ".join(r["heading_path"][1:]) + " " + r["text"])
        place, _, ocr = locate(doc["meta"], int(r["start"]), int(r["end"]))
        return Hit(
            id=r["id"], doc_id=r["doc_id"], title=doc["title"], heading_path=r["heading_path"], text=r["text"],
            score=round(float(score), 4), scores=scores,
            best_sentence=best_sentence(r["text"], terms, self.snapshot.idf, query),
            matched_terms=terms,
            citation=cite(Reference.of(doc["title"], doc["meta"], r["heading_path"], doc["path"], place=place)),
            kind=r["kind"], parent=r["parent"], path=doc["path"], meta=public_meta(doc["meta"]), context=context,
            locator=place, ocr=ocr, cite_key=self.cite_key(r["doc_id"]),
        )

    def cite_key(self, doc_id: str) -> str:
        """The document's citation key: author-year-title (:func:`kb.present.cite.citation_key`),
        with its id's first characters when another document of the library would share it — the
        same in every run and after re-indexing the same library."""
        if self._cite_keys is None:
            base = {d["doc_id"]: citation_key(d["meta"].get("author", ""), d["meta"].get("source", ""),
                                              d["meta"].get("date", ""), d["title"] or "") for d in self.docs}
            count: dict[str, int] = {}
            for k in base.values():
                count[k] = count.get(k, 0) + 1
            self._cite_keys = {i: k if count[k] == 1 else f"{k}-{i[:6]}" for i, k in base.items()}
        return self._cite_keys.get(doc_id, doc_id)

    def passage_hit(self, passage_id: str) -> Hit:
        """A passage as a hit of its own (no query): what the page shows as the focus of
        its related-passages view, with its citation."""
        return self._hit(self.passage(passage_id), "", [], 1.0, {"dense": 1.0, "lexical": 0.0}, [])

    def show(self, passage_id: str, context: int = 1) -> dict[str, Any]:
        """A passage with its document's metadata, its parent and children, and up to
        ``context`` neighbours before and after it at its own level: sibling sub-points
        (or the paragraph's opening) for a sub-point, paragraphs for a paragraph."""
        p = self.passage(passage_id)
        doc = self.document_info(p["doc_id"])
        level = self.snapshot.level(p["doc_id"], p["parent"])
        children = self.snapshot.children(p["doc_id"], p["id"])
        pos = next((i for i, t in enumerate(level) if t["id"] == p["id"]), 0)
        before, after = level[max(0, pos - context): pos], level[pos + 1: pos + 1 + context]
        parent = self.passage(p["parent"]) if p["parent"] else None
        if parent is not None and context > 0 and pos == 0 and p["start"] > parent["start"]:
            lead = parent["text"][: p["start"] - parent["start"]].strip()
            if lead:  # the paragraph's opening, before its first sub-point
                before = [{"id": parent["id"], "kind": "lead", "text": lead, "heading_path": parent["heading_path"]}]
        place, _, ocr = locate(self.doc_by_id[p["doc_id"]]["meta"], int(p["start"]), int(p["end"]))
        return {
            "passage": p, "document": doc, "parent": parent, "children": children, "before": before, "after": after,
            "citation": cite(Reference.of(doc.title, doc.meta, p["heading_path"], doc.path, place=place)),
            "locator": place, "ocr": ocr,
        }

    def document_info(self, doc_id: str) -> DocumentView:
        doc = self.doc_by_id.get(doc_id)
        if doc is None:
            raise UnknownPassage(f"no document with id {doc_id!r} in {self.location}/")
        return _document_view(doc)

    def documents(self) -> list[DocumentView]:
        """Every document, in index order."""
        return [_document_view(d) for d in self.docs]

    def document(self, doc_id: str) -> dict[str, Any]:
        """A document's card (``document``), full text and passages (top level and children)."""
        info = self.document_info(doc_id)
        return {"document": info, "text": self.snapshot.doc_text(doc_id), "passages": self.snapshot.outline(doc_id)}

    def stats(self) -> dict[str, Any]:
        """What ``kb stats`` shows: the library's counts and what its store says of itself."""
        own = self.snapshot.describe()
        sources: dict[str, int] = {}
        for d in self.docs:
            s = d["meta"].get("source")
            if s:
                sources[s] = sources.get(s, 0) + 1
        m = self.manifest
        common = {
            "generation": self.version, "created": m.get("created"), "corpus": m.get("corpus"),
            "documents": len(self.docs), "passages": self.count, "passage_kinds": self.snapshot.passage_kinds(),
            "embedder": self.spec, "sources": sources, "kb_version": m.get("kb_version"),
            "dictionary": self.vocabulary.describe(),
        }
        fields = {**own, **common}
        return {**{k: fields.pop(k) for k in STATS_ORDER if k in fields}, **fields}

    def close(self) -> None:
        """Release the snapshot (segment readers shared with other versions close when the
        last searcher holding them is gone)."""
        self.snapshot.close()


# The order of ``kb stats --json``; a store's fields of its own that are not listed come last.
STATS_ORDER = ("index", "store", "collections", "generation", "created", "corpus", "documents", "passages",
               "passage_kinds", "embedder", "vector_index", "segments", "vocabulary", "dictionary", "size_bytes",
               "sources", "format_version", "kb_version")


def title_of(row: dict[str, Any]) -> str:
    """A passage's document title: the first element of its heading path."""
    return row["heading_path"][0] if row["heading_path"] else ""


def _document_view(row: dict[str, Any]) -> DocumentView:
    return DocumentView(doc_id=row["doc_id"], path=row["path"], title=row["title"], meta=public_meta(row["meta"]),
                        format=row.get("format") or "", n_passages=int(row.get("n_passages") or 0),
                        indexed_at=row.get("indexed_at") or "")
