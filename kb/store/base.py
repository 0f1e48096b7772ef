"""What every store gives the layers above it: a :class:`Store` (a library at a location: its
live version, its manifest) and a :class:`Snapshot` (one version of it, read-only, shared by
every query until a newer one is opened). The local store (:mod:`kb.store.local`) and Milvus
(:mod:`kb.store.milvus`) both implement them; ranking, views and citations see nothing else.

Rows are the store's own integer handles for passages (a global row number in the local
store, an INT64 key in Milvus): stable within a snapshot, never shown to a user. Every read
returns the same shapes (:class:`PassageRow`, :class:`DocumentRow`) on both stores; a filter
is the set of document ids it allows, turned into each store's own form inside the store.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np


class PassageRow(TypedDict):
    """A passage as a snapshot returns it."""

    row: int
    id: str
    doc_id: str
    kind: str  # "paragraph" | "subpoint" | ...
    parent: str | None
    ordinal: int
    start: int
    end: int
    orig_start: int
    orig_end: int
    heading_path: list[str]  # decoded: the document title first
    text: str


class DocumentRow(TypedDict, total=False):
    """A document as a snapshot returns it (``meta`` decoded)."""

    doc_id: str
    path: str
    title: str
    meta: dict[str, Any]
    content_hash: str
    encoding: str
    format: str
    size: int
    mtime_ns: int
    ctime_ns: int
    n_passages: int
    indexed_at: str


# What :meth:`Snapshot.outline` gives of each passage of a document (the full-document view).
OUTLINE_FIELDS = ("id", "kind", "parent", "start", "end", "heading_path")
# What :meth:`Snapshot.level` gives of each passage at one level of a document.
LEVEL_FIELDS = ("id", "kind", "text", "heading_path", "start", "end", "ordinal")
# What :meth:`Snapshot.children` gives of each sub-point.
CHILD_FIELDS = ("id", "kind", "text", "heading_path")

SAMPLE_SIZE = 512  # passages in the dense calibration sample (smallest id hashes among live rows)


def id_hash(passage_id: str) -> int:
    """A passage id's 64-bit hash: the order of the calibration sample on every store."""
    return int.from_bytes(hashlib.blake2b(passage_id.encode("utf-8"), digest_size=8).digest(), "little")


class DocSet(AbstractSet):
    """The ids of the documents a filter allows, held as their positions (``positions``) in
    one snapshot's ``docs`` list (``of``): a store may use the positions directly (the local
    store does, so a broad filter costs no pass over ids in Python); the ids themselves are
    made only when a store asks for them (membership, iteration)."""

    def __init__(self, positions, of: list) -> None:
        self.positions, self.of = positions, of
        self._ids: frozenset[str] | None = None

    def ids(self) -> frozenset[str]:
        if self._ids is None:
            self._ids = frozenset(self.of[i]["doc_id"] for i in self.positions)
        return self._ids

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.ids()

    def __iter__(self):
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self.positions)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DocSet) and other.of is self.of:  # compared by position: no ids made
            return bool(np.array_equal(self.positions, other.positions))
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


Allowed = AbstractSet[str] | None  # the documents a filter allows (None: every document): ids, or a DocSet


@dataclass(frozen=True)
class Head:
    """A store's live version as found: what a snapshot opens (``ref`` is the store's own)."""

    version: str
    manifest: dict[str, Any]
    ref: Any = None


class Snapshot(ABC):
    """One version of a library. Thread-safe; rows and statistics never change under it."""

    location: str  # where the library lives, as a user named it
    manifest: dict[str, Any]
    docs: list[DocumentRow]  # live documents, in index order
    doc_by_id: dict[str, DocumentRow]
    dim: int  # the vectors' dimension
    # BM25 parameters the store fixed when it wrote the library (Milvus stores the weighted
    # document side); None where they are free at query time (the local store's raw postings)
    bm25_written: tuple[float, float] | None = None

    @property
    @abstractmethod
    def version(self) -> str:
        """What :meth:`Store.current_version` said when this snapshot was opened."""

    @property
    @abstractmethod
    def n_live(self) -> int:
        """Live passages."""

    # ------------------------------------------------------------------ statistics
    @abstractmethod
    def idf(self, term: str) -> float:
        """A word's BM25 IDF over the live library (0 for a word it has never seen)."""

    def has_term(self, term: str) -> bool:
        return self.idf(term) > 0.0

    @abstractmethod
    def sample_vectors(self) -> np.ndarray:
        """The dense calibration sample: vectors of the live passages with the smallest id
        hashes (the same documents give the same sample on either store)."""

    # ------------------------------------------------------------------ rows
    @abstractmethod
    def rows(self, rows: Iterable[int]) -> dict[int, PassageRow]:
        """Live passages of these rows, by row."""

    @abstractmethod
    def by_ids(self, ids: Iterable[str]) -> dict[str, PassageRow]:
        """Live passages by id."""

    @abstractmethod
    def vectors(self, rows: Iterable[int]) -> np.ndarray:
        """The vectors of these rows, in order (``len(rows) × dim``)."""

    # ------------------------------------------------------------------ channels
    @abstractmethod
    def dense(self, qvec: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and cosines of the ``k`` nearest live passages, best first (ties by row)."""

    @abstractmethod
    def bm25_top(self, tokens: list[str], k1: float, b: float, k: int,
                 allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` best BM25 matches (each distinct token once)."""

    @abstractmethod
    def bm25_of(self, tokens: list[str], k1: float, b: float, rows: Iterable[int]) -> dict[int, float]:
        """BM25 scores of these rows."""

    # ------------------------------------------------------------------ documents
    @abstractmethod
    def level(self, doc_id: str, parent: str | None) -> list[dict[str, Any]]:
        """A document's passages under ``parent`` (None: its top level), in order, with
        :data:`LEVEL_FIELDS`."""

    @abstractmethod
    def children(self, doc_id: str, passage_id: str) -> list[dict[str, Any]]:
        """A passage's sub-points in order, with :data:`CHILD_FIELDS`."""

    @abstractmethod
    def descendants(self, doc_id: str, passage_id: str) -> set[str]:
        """Ids of every passage below this one."""

    @abstractmethod
    def doc_text(self, doc_id: str) -> str:
        """A document's full (normalised) text."""

    @abstractmethod
    def outline(self, doc_id: str) -> list[dict[str, Any]]:
        """Every passage of a document in order, with :data:`OUTLINE_FIELDS`."""

    @abstractmethod
    def passage_kinds(self) -> dict[str, int]:
        """Live passages per kind."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What only this store knows for ``kb stats``: ``index``, ``vector_index``,
        ``segments``, ``vocabulary``, ``size_bytes``, ``format_version`` and any of its own."""

    # ------------------------------------------------------------------ life
    @abstractmethod
    def is_stale(self) -> bool:
        """True when the store has published a newer version since this one was opened."""

    def recheck(self) -> None:
        """Raise :class:`kb.errors.IndexDamaged` when what this snapshot answers from no longer
        matches what was checked when it opened (cheap: for a health check). By default there
        is nothing of the store's own to check."""

    def close(self) -> None:
        """Release what this snapshot holds (it is not used afterwards)."""


class Store(ABC):
    """A library at a location, whatever holds it."""

    location: str
    backend: str  # "local" or "milvus": which indexer writes it

    @abstractmethod
    def head(self) -> Head:
        """The live version and its manifest; :class:`kb.errors.IndexNotFound` when there is
        none, :class:`kb.errors.IndexMismatch` when this kb cannot read it."""

    @abstractmethod
    def current_version(self) -> str | None:
        """The live version (None: no index yet). Cheap: asked on every request."""

    @abstractmethod
    def open(self, head: Head) -> Snapshot:
        """A snapshot of ``head`` (damage shows now, not in the middle of a query)."""

    def release(self, head: Head) -> None:
        """Give back what :meth:`head` holds when no snapshot is opened from it."""

    def snapshot(self) -> Snapshot:
        """A snapshot of the live version."""
        return self.open(self.head())
