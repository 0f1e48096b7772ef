"""Segments: the immutable pieces an index generation is made of.

::

    index/segments/seg-000007/
      segment.json       format, rows, documents, dimension, vector index kind (written last)
      meta.sqlite        documents and passages of this segment (rows numbered from 0)
      vectors.faiss      dense vectors, row i = passage row i (+ vectors.f32.npy behind fp16)
      postings/          raw BM25 postings (term -> rows, tf) and row lengths
      passage_doc.npy    row -> document number in this segment
      idhash.npy         row -> 64-bit hash of the passage id (order-free calibration sample)

A segment is written once (``seg-N.tmp/`` renamed to ``seg-N/``) and never changed. A
generation (:class:`kb.store.local.snapshot.LocalSnapshot`) is a list of segments plus, per
segment, the documents deleted since it was written. Readers of a segment are shared by
every generation that lists it (:func:`open_segment`), so a new generation opens only its
new segment.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import KBError
from kb.store.base import id_hash
from kb.store.local.layout import (
    DOC_COLUMNS,
    PASSAGE_COLUMNS,
    _fsync_dir,
    check_seal,
    create_db,
    damaged,
    file_checksum,
    fsync_file,
    open_db,
    save_array,
    save_json,
    sealed,
)
from kb.store.local.postings import Postings, PostingsBuilder
from kb.store.local.vectors import VectorIndex

SEGMENT_FORMAT = 1



def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)  # quoted: "end" is an SQL keyword
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"


# ---------------------------------------------------------------------------- rows
class PassageStore:
    """Document and passage rows of one segment (SQLite, read-only, shared across threads)."""

    DOC_BRIEF = ("doc_idx, doc_id, path, title, meta, n_passages, indexed_at, format, content_hash, size, "
                 "mtime_ns, ctime_ns")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = open_db(path)
        self._lock = threading.Lock()
        columns = {r[1] for r in self.con.execute("PRAGMA table_info(documents)")}
        if "ctime_ns" not in columns:  # written before ctime was recorded
            self.DOC_BRIEF = self.DOC_BRIEF.replace("ctime_ns", "NULL AS ctime_ns")
        self._vkey_indexed = any(r[1] == "passages_vkey" for r in self.con.execute("PRAGMA index_list(passages)"))
        self._vkey_map: dict[str, int] | None = None

    def _all(self, sql: str, args=()) -> list[dict[str, Any]]:
        with self._lock, self._reading():
            return [dict(r) for r in self.con.execute(sql, args)]

    @contextmanager
    def _reading(self):
        """A page of the file that does not read (found only when a query reaches it) is
        the index's damage, said in one line naming the file — not an unexpected error."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise segment_damaged(self.path.parent, "meta.sqlite", e) from e

    def documents(self) -> list[dict[str, Any]]:
        docs = self._all(f"SELECT {self.DOC_BRIEF} FROM documents ORDER BY doc_idx")
        for d in docs:
            d["meta"] = json.loads(d["meta"])
        return docs

    def files(self) -> list[dict[str, Any]]:
        """What a re-index compares with the folder: path, hash, size and times (no text)."""
        ctime = "NULL AS ctime_ns" if "NULL AS ctime_ns" in self.DOC_BRIEF else "ctime_ns"
        names = ("doc_idx", "doc_id", "path", "content_hash", "size", "mtime_ns", "ctime_ns", "n_passages")
        with self._lock, self._reading():
            cur = self.con.cursor()
            cur.row_factory = None  # plain tuples: a library of 50,000 documents is read on every run
            rows = cur.execute(f"SELECT doc_idx, doc_id, path, content_hash, size, mtime_ns, {ctime}, n_passages "
                               "FROM documents").fetchall()
        return [dict(zip(names, r)) for r in rows]

    def document_row(self, doc_id: str) -> dict[str, Any]:
        return self._all("SELECT * FROM documents WHERE doc_id = ?", (doc_id,))[0]

    def doc_text(self, doc_id: str) -> str:
        return self._all("SELECT text FROM documents WHERE doc_id = ?", (doc_id,))[0]["text"]

    def titles_and_texts(self) -> Iterator[tuple[str, str]]:
        """``(doc_id, title + text)`` of every document, one at a time."""
        ids = [r["doc_id"] for r in self._all("SELECT doc_id FROM documents")]
        for i in range(0, len(ids), 200):  # a few documents' text in memory at a time
            chunk = ids[i: i + 200]
            for row in self._all(f"SELECT doc_id, title, text FROM documents WHERE doc_id IN "
                                 f"({','.join('?' * len(chunk))})", chunk):
                yield row["doc_id"], (row["title"] or "") + "\n" + row["text"]

    def _in(self, column: str, keys: list, select: str = "*") -> list[dict[str, Any]]:
        out = []
        for i in range(0, len(keys), 500):
            chunk = keys[i: i + 500]
            out += self._all(f"SELECT {select} FROM passages WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)
        return out

    # what a search or a view reads of a passage (not its tokens or vector key)
    SHOWN = 'row, id, doc_id, kind, parent, ordinal, start, "end", orig_start, orig_end, heading_path, text'

    def by_rows(self, rows: list[int]) -> list[dict[str, Any]]:
        return self._in("row", rows, self.SHOWN)

    def by_ids(self, ids: list[str]) -> list[dict[str, Any]]:
        return self._in("id", ids, self.SHOWN)

    def rows_for_vkeys(self, vkeys: list[str]) -> dict[str, int]:
        if not self._vkey_indexed:  # a format-1 index: one scan, kept for the run
            if self._vkey_map is None:
                self._vkey_map = {r["vkey"]: r["row"] for r in self._all("SELECT vkey, row FROM passages")}
            return {k: self._vkey_map[k] for k in vkeys if k in self._vkey_map}
        return {r["vkey"]: r["row"] for r in self._in("vkey", vkeys, "vkey, row")}

    def passages_of(self, doc_id: str, columns: str = "*") -> list[dict[str, Any]]:
        return self._all(f"SELECT {columns} FROM passages WHERE doc_id = ? ORDER BY ordinal", (doc_id,))

    def level(self, doc_id: str, parent: str | None) -> list[dict[str, Any]]:
        cols = 'id, kind, text, heading_path, start, "end", ordinal'
        if parent:
            return self._all(f"SELECT {cols} FROM passages WHERE doc_id = ? AND parent = ? ORDER BY ordinal",
                             (doc_id, parent))
        return self._all(f"SELECT {cols} FROM passages WHERE doc_id = ? AND parent IS NULL ORDER BY ordinal",
                         (doc_id,))

    def children(self, passage_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT id, kind, text, heading_path FROM passages WHERE parent = ? ORDER BY ordinal",
                         (passage_id,))

    def descendants(self, passage_id: str) -> set[str]:
        return {r["id"] for r in self._all(
            "WITH RECURSIVE d(id) AS (SELECT id FROM passages WHERE parent = ? "
            "UNION SELECT p.id FROM passages p JOIN d ON p.parent = d.id) SELECT id FROM d", (passage_id,))}

    def kinds_by_doc(self) -> list[dict[str, Any]]:
        return self._all("SELECT doc_id, kind, COUNT(*) AS n FROM passages GROUP BY doc_id, kind")

    def close(self) -> None:
        with self._lock:
            self.con.close()


# ---------------------------------------------------------------------------- writing
class _Clock:
    def __init__(self, into: dict | None) -> None:
        self.into = into
        self.t = time.perf_counter()

    def __call__(self, step: str) -> None:
        if self.into is not None:
            now = time.perf_counter()
            self.into[step] = round(self.into.get(step, 0.0) + now - self.t, 2)
            self.t = now



class SegmentWriter:
    """Writes one segment into ``segments/seg-N.tmp/``; :meth:`finish` renames it to
    ``seg-N/``. Documents are added in order; rows are numbered as they come."""

    def __init__(self, directory: Path, dim: int, embedder: dict | None = None) -> None:
        self.final = directory
        self.embedder = embedder  # recorded with the vectors: what `--rebuild` keeps when no manifest reads
        self.tmp = directory.with_name(directory.name + ".tmp")
        self.tmp.mkdir(parents=True)
        self.dim = dim
        self.con = create_db(self.tmp / "meta.sqlite")
        self.vectors: list[np.ndarray] = []
        self.postings = PostingsBuilder()
        self.passage_doc: list[int] = []
        self.idhash: list[int] = []
        self.rows = 0
        self.docs = 0
        self._doc_sql = _insert_sql("documents", DOC_COLUMNS)
        self._pas_sql = _insert_sql("passages", PASSAGE_COLUMNS)

    def add(self, doc: dict, passages: list[dict], vectors: np.ndarray,
            tokens: list[list[str]] | None = None) -> None:
        """``doc``: a documents row (``doc_idx`` assigned here); ``passages``: its passage
        rows in order (``row`` assigned here); ``vectors``: one per passage; ``tokens``:
        each passage's BM25 tokens (read from the rows' ``tokens`` when not given)."""
        doc_idx = self.docs
        self.docs += 1
        self.con.execute(self._doc_sql, tuple({**doc, "doc_idx": doc_idx}.get(c) for c in DOC_COLUMNS))
        batch = []
        cols = PASSAGE_COLUMNS[1:]
        assert PASSAGE_COLUMNS[0] == "row"
        for r in passages:
            batch.append((self.rows, *[r.get(c) for c in cols]))
            self.rows += 1
            self.idhash.append(id_hash(r["id"]))
        self.passage_doc.extend([doc_idx] * len(passages))
        if tokens is None:
            tokens = [[t for t in r["tokens"].split(" ") if t] for r in passages]
        for toks in tokens:
            self.postings.add(toks)
        self.con.executemany(self._pas_sql, batch)
        if len(passages):
            self.vectors.append(np.asarray(vectors, dtype=np.float32).reshape(len(passages), self.dim))

    def finish(self, vector_kind: str = "auto", created: str = "", timings: dict | None = None) -> dict[str, Any]:
        """Write the rest, fsync, and rename into place. Returns the segment's manifest
        entry. ``timings``, when given, receives the seconds of each step (profiling)."""
        clock = _Clock(timings)
        self.con.executescript(
            "CREATE INDEX passages_doc ON passages(doc_id, ordinal);"
            "CREATE INDEX passages_parent ON passages(parent);"
            "CREATE INDEX passages_vkey ON passages(vkey);"
            # covers what a re-index reads of every document (no trip through the texts)
            "CREATE INDEX documents_files ON documents(path, doc_id, content_hash, size, mtime_ns, ctime_ns, "
            "n_passages);"
        )
        self.con.commit()
        self.con.close()
        fsync_file(self.tmp / "meta.sqlite")
        clock("sqlite_indexes")
        matrix = np.vstack(self.vectors) if self.vectors else np.zeros((0, self.dim), dtype=np.float32)
        self.vectors = []
        vindex = VectorIndex.build(matrix, self.dim, kind=vector_kind)
        del matrix
        clock("vectors_build")
        vindex.save(self.tmp / "vectors.faiss")
        clock("vectors_save")
        self.postings.finish().save(self.tmp / "postings")
        clock("postings")
        save_array(self.tmp / "passage_doc.npy", np.asarray(self.passage_doc, dtype=np.int32))
        save_array(self.tmp / "idhash.npy", np.asarray(self.idhash, dtype=np.uint64))
        info = {"format": SEGMENT_FORMAT, "rows": self.rows, "docs": self.docs, "dim": self.dim,
                "vector_index": vindex.kind, "created": created, "checksums": checksums(self.tmp)}
        if self.embedder is not None:
            info["embedder"] = self.embedder
        save_json(self.tmp / "segment.json", sealed(info))
        for sub in (self.tmp / "postings", self.tmp):
            _fsync_dir(sub)
        os.rename(self.tmp, self.final)
        _fsync_dir(self.final.parent)
        clock("rest")
        return {"name": self.final.name, "rows": self.rows, "docs": self.docs}

    def abandon(self) -> None:
        try:
            self.con.close()
        except sqlite3.Error:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- reading
def checksums(folder: Path) -> dict[str, str]:
    """The checksum of every file of a segment folder but segment.json (which holds them)."""
    return {p.relative_to(folder).as_posix(): file_checksum(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "segment.json"}


def _may_read(path: Path) -> bool:
    """False when this user may not open ``path`` (or a folder on the way) for reading; a
    missing file is not a permission problem."""
    for p in (*reversed(path.parents[:3]), path):
        try:
            if p.exists() and not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
                return False
        except OSError:
            return False
    return True


def segment_damaged(path: Path, what: str, e: BaseException) -> KBError:
    """:func:`damaged` for a file of the segment at ``path`` (a file this user may not read,
    whatever the library said, is a permission problem)."""
    where = f"{path.parent.name}/{path.name}/{what}".rstrip("/")
    if not _may_read(path / what):
        e = PermissionError(13, "Permission denied")
    return damaged(path.parent.parent, e, where)


class SegmentReader:
    """One segment's files, opened on first use and shared by every generation that
    lists the segment. A format-1 generation folder (before segments) opens as one
    segment for migration (rows and vectors only)."""

    def __init__(self, path: Path, legacy: bool = False) -> None:
        self.path = path
        self.name = path.name
        self.legacy = legacy
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {}  # files loaded on first use, by file name
        self._docs: list[dict[str, Any]] | None = None
        self._verified = legacy  # a format-1 folder has no checksums
        self._stamps: dict[str, tuple[int, int, int]] = {}  # file -> (inode, size, mtime) when verified
        try:
            if legacy:
                m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
                self.info = {"rows": int(m["passages"]), "docs": int(m["documents"]), "dim": int(m["embedder"]["dim"])}
            else:
                self.info = json.loads((path / "segment.json").read_text(encoding="utf-8"))
                check_seal(self.info)
                if self.info.get("format") != SEGMENT_FORMAT:
                    raise ValueError(f"segment format {self.info.get('format')}")
            self.rows = int(self.info["rows"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise segment_damaged(path, "segment.json", e) from e
        try:
            self.store = PassageStore(path / "meta.sqlite")
        except (OSError, sqlite3.Error) as e:
            raise segment_damaged(path, "meta.sqlite", e) from e

    def _load(self, what: str, fn):
        try:
            return fn()
        except (OSError, ValueError, RuntimeError, KeyError, sqlite3.Error) as e:  # faiss: RuntimeError
            raise segment_damaged(self.path, what, e) from e

    def _part(self, what: str, load, count) -> Any:
        """A file of the segment, loaded once and checked against the row count."""
        with self._lock:
            if what not in self._parts:
                part = self._load(what, load)
                if count(part) != self.rows:
                    raise segment_damaged(self.path, what, ValueError(f"{count(part)} rows, {self.rows} expected"))
                self._parts[what] = part
            return self._parts[what]

    @property
    def vectors(self) -> VectorIndex:
        return self._part("vectors.faiss", lambda: VectorIndex.load(self.path / "vectors.faiss"), lambda v: v.count)

    @property
    def postings(self) -> Postings:
        return self._part("postings", lambda: Postings.load(self.path / "postings"), lambda p: p.n_rows)

    def _row_array(self, name: str) -> np.ndarray:
        """A per-row ``.npy`` array."""
        return self._part(f"{name}.npy", lambda: np.load(self.path / f"{name}.npy"), len)

    @property
    def passage_doc(self) -> np.ndarray:
        return self._row_array("passage_doc")

    @property
    def idhash(self) -> np.ndarray:
        return self._row_array("idhash")

    @property
    def docs(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._docs is None:
                self._docs = self._load("meta.sqlite", self.store.documents)
            return self._docs

    def verify(self) -> None:
        """Check every file against the checksum written with it (once per reader; segments
        written before checksums were recorded are taken as they are)."""
        with self._lock:
            if self._verified:
                return
            stamps = {}
            for rel, expected in (self.info.get("checksums") or {}).items():
                stamps[rel] = self._check(rel, expected)
            self._stamps = stamps
            self._verified = True

    def _check(self, rel: str, expected: str) -> tuple[int, int, int]:
        """The file's (inode, size, mtime) once its bytes match ``expected``."""
        try:
            st = os.stat(self.path / rel)
            found = file_checksum(self.path / rel)
        except OSError as e:
            raise segment_damaged(self.path, rel, e) from e
        if found != expected:
            raise segment_damaged(self.path, rel, ValueError("its checksum does not match"))
        return st.st_ino, st.st_size, st.st_mtime_ns

    def recheck(self) -> None:
        """After :meth:`verify`: check again only the files changed on disk since (replaced,
        resized, rewritten) — cheap enough for every health check."""
        with self._lock:
            for rel, stamp in list(self._stamps.items()):
                try:
                    st = os.stat(self.path / rel)
                    now = (st.st_ino, st.st_size, st.st_mtime_ns)
                except OSError as e:
                    raise segment_damaged(self.path, rel, e) from e
                if now != stamp:
                    self._stamps[rel] = self._check(rel, self.info["checksums"][rel])

    def open_all(self) -> None:
        """Verify and open every file now (a searcher does, so damage shows at load, not
        mid-query, and bytes changed on disk never answer a query)."""
        self.verify()
        self.vectors, self.postings, self.passage_doc, self.idhash, self.docs  # noqa: B018

    def close(self) -> None:
        with self._lock:
            if "vectors.faiss" in self._parts:
                self._parts["vectors.faiss"].close()
            self.store.close()


_OPEN: weakref.WeakValueDictionary[tuple, SegmentReader] = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


def open_segment(path: Path) -> SegmentReader:
    """The shared reader of the segment at ``path`` (one per process while anyone holds it)."""
    path = Path(path)
    try:
        st = (path / "segment.json").stat()
        key = (str(path.resolve()), st.st_ino, st.st_mtime_ns)
    except OSError as e:
        raise segment_damaged(path, "segment.json" if path.exists() else "", e) from e
    with _OPEN_LOCK:
        reader = _OPEN.get(key)
        if reader is None:
            reader = SegmentReader(path)
            _OPEN[key] = reader
        return reader


# ---------------------------------------------------------------------------- a generation
def load_deleted(gen: Path, entry: dict[str, Any]) -> np.ndarray:
    """The document numbers of the segment of manifest entry ``entry`` that generation ``gen``
    deletes (none when it deletes none), checked against the checksum the manifest holds."""
    name = entry["name"]
    if not entry.get("deleted_docs"):
        return np.zeros(0, dtype=np.int64)
    path = gen / "deleted" / f"{name}.npy"
    try:
        if "deleted_crc32" in entry and file_checksum(path) != entry["deleted_crc32"]:
            raise ValueError("its checksum does not match")
        return np.load(path).astype(np.int64)
    except (OSError, ValueError) as e:
        raise damaged(gen.parent, e, f"{gen.name}/deleted/{name}.npy") from e
