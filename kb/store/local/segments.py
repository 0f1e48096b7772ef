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
generation (:class:`GenerationView`) is a list of segments plus, per segment, the documents
deleted since it was written. Readers of a segment are shared by every generation that
lists it (:func:`open_segment`), so a new generation opens only its new segment.

The interface a storage backend provides to ranking is small: dense top-k over live rows
(:meth:`GenerationView.dense`), BM25 scores with corpus-wide statistics
(:meth:`GenerationView.bm25`), passage/document rows by row or id, and a deletion set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import KBError
from kb.store.local import postings as bm25
from kb.store.local.layout import (
    DOC_COLUMNS,
    PASSAGE_COLUMNS,
    _fsync_dir,
    _reason,
    create_db,
    fsync_file,
    open_db,
    save_array,
    save_json,
)
from kb.store.local.postings import Postings, PostingsBuilder
from kb.store.local.vectors import VectorIndex

SEGMENT_FORMAT = 1
SAMPLE_SIZE = 512  # passages in the dense calibration sample (smallest id hashes among live rows)


def id_hash(passage_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(passage_id.encode("utf-8"), digest_size=8).digest(), "little")


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
        with self._lock:
            return [dict(r) for r in self.con.execute(sql, args)]

    def documents(self) -> list[dict[str, Any]]:
        docs = self._all(f"SELECT {self.DOC_BRIEF} FROM documents ORDER BY doc_idx")
        for d in docs:
            d["meta"] = json.loads(d["meta"])
        return docs

    def files(self) -> list[dict[str, Any]]:
        """What a re-index compares with the folder: path, hash, size and times (no text)."""
        ctime = "NULL AS ctime_ns" if "NULL AS ctime_ns" in self.DOC_BRIEF else "ctime_ns"
        names = ("doc_idx", "doc_id", "path", "content_hash", "size", "mtime_ns", "ctime_ns", "n_passages")
        with self._lock:
            cur = self.con.cursor()
            cur.row_factory = None  # plain tuples: a library of 50,000 documents is read on every run
            rows = cur.execute(f"SELECT doc_idx, doc_id, path, content_hash, size, mtime_ns, {ctime}, n_passages "
                               "FROM documents").fetchall()
        return [dict(zip(names, r)) for r in rows]

    def document_row(self, doc_id: str) -> dict[str, Any]:
        return self._all("SELECT * FROM documents WHERE doc_id = ?", (doc_id,))[0]

    def doc_text(self, doc_id: str) -> str:
        return self._all("SELECT text FROM documents WHERE doc_id = ?", (doc_id,))[0]["text"]

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

    def __init__(self, directory: Path, dim: int) -> None:
        self.final = directory
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
                "vector_index": vindex.kind, "created": created}
        save_json(self.tmp / "segment.json", info)
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
def segment_damaged(path: Path, what: str, e: BaseException) -> KBError:
    where = f"{path.parent.name}/{path.name}/{what}" if what else f"{path.parent.name}/{path.name}"
    return KBError(f"index at {path.parent.parent}/ is damaged: {where} is missing or unreadable "
                   f"({_reason(e)}) — rebuild it with `kb index FOLDER --rebuild`")


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
        try:
            if legacy:
                m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
                self.info = {"rows": int(m["passages"]), "docs": int(m["documents"]), "dim": int(m["embedder"]["dim"])}
            else:
                self.info = json.loads((path / "segment.json").read_text(encoding="utf-8"))
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

    def open_all(self) -> None:
        """Open every file now (a searcher does, so damage shows at load, not mid-query)."""
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
def load_deleted(gen: Path, name: str) -> np.ndarray:
    """The document numbers of segment ``name`` that generation ``gen`` deletes."""
    try:
        return np.load(gen / "deleted" / f"{name}.npy").astype(np.int64)
    except (OSError, ValueError) as e:
        raise KBError(f"index at {gen.parent}/ is damaged: {gen.name}/deleted/{name}.npy is missing or "
                      f"unreadable ({_reason(e)}) — rebuild it with `kb index FOLDER --rebuild`") from e


class GenerationView:
    """The live rows of a generation: its segments, minus deleted documents, as one row
    space (global row = segment offset + local row; deleted rows are never returned)."""

    def __init__(self, segments: list[SegmentReader], deleted: list[np.ndarray]) -> None:
        self.segments = segments
        self.deleted = deleted
        self.live: list[np.ndarray | None] = []
        self.offsets = np.zeros(len(segments) + 1, dtype=np.int64)
        for i, (seg, dead) in enumerate(zip(segments, deleted)):
            self.offsets[i + 1] = self.offsets[i] + seg.rows
            self.live.append(~np.isin(seg.passage_doc, dead) if len(dead) else None)
        self.total_rows = int(self.offsets[-1])
        self.docs: list[dict[str, Any]] = []
        for i, (seg, dead) in enumerate(zip(segments, deleted)):
            gone = set(dead.tolist())
            self.docs += [{**d, "seg": i} for d in seg.docs if d["doc_idx"] not in gone]
        self.doc_by_id = {d["doc_id"]: d for d in self.docs}
        self._stats_lock = threading.Lock()
        self._terms: OrderedDict[str, tuple[int, list]] = OrderedDict()
        self._sample: np.ndarray | None = None
        self._lexical: tuple[int, int] | None = None
        self._last_bm25: tuple[tuple, np.ndarray] | None = None

    @property
    def n_live(self) -> int:
        return self.lexical_stats()[0]

    def lexical_stats(self) -> tuple[int, int]:
        """(live rows, their total length in tokens): exact integers."""
        with self._stats_lock:
            if self._lexical is None:
                n = total = 0
                for seg, live in zip(self.segments, self.live):
                    lengths = seg.postings.lengths
                    if live is None:
                        n += seg.rows
                        total += int(np.asarray(lengths, dtype=np.int64).sum())
                    else:
                        n += int(live.sum())
                        total += int(np.asarray(lengths, dtype=np.int64)[live].sum())
                self._lexical = (n, total)
            return self._lexical

    # ------------------------------------------------------------------ rows
    def locate(self, rows) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        seg = np.searchsorted(self.offsets, rows, side="right") - 1
        return seg, rows - self.offsets[seg]

    def rows(self, rows) -> dict[int, dict[str, Any]]:
        """Passage records of global ``rows`` (live ones), keyed by global row."""
        rows = list(dict.fromkeys(int(r) for r in rows))
        if not rows:
            return {}
        seg, local = self.locate(rows)
        out: dict[int, dict[str, Any]] = {}
        for s in np.unique(seg):
            pick = local[seg == s].tolist()
            base = int(self.offsets[s])
            for d in self.segments[s].store.by_rows(pick):
                d["heading_path"] = json.loads(d["heading_path"])
                d["row"] += base
                out[d["row"]] = d
        return out

    def by_ids(self, ids) -> dict[str, dict[str, Any]]:
        """Live passage records by id (global ``row``)."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, dict[str, Any]] = {}
        for s, seg in enumerate(self.segments):
            if not ids:
                break
            for d in seg.store.by_ids(ids):
                doc = self.doc_by_id.get(d["doc_id"])
                if doc is None or doc["seg"] != s:
                    continue  # a deleted or replaced version
                d["heading_path"] = json.loads(d["heading_path"])
                d["row"] += int(self.offsets[s])
                out[d["id"]] = d
            ids = [i for i in ids if i not in out]
        return out

    def store_of(self, doc_id: str) -> PassageStore:
        return self.segments[self.doc_by_id[doc_id]["seg"]].store

    def vectors(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        dim = self.dim
        out = np.zeros((len(rows), dim), dtype=np.float32)
        if not len(rows):
            return out
        seg, local = self.locate(rows)
        for s in np.unique(seg):
            where = np.flatnonzero(seg == s)
            out[where] = self.segments[s].vectors.vectors(local[where])
        return out

    @property
    def dim(self) -> int:
        return int(self.segments[0].info["dim"]) if self.segments else 0

    def row_mask(self, allowed_docs: set[str]) -> list[np.ndarray]:
        """Per segment, which rows belong to the documents ``allowed_docs`` (and are live)."""
        masks = []
        for s, seg in enumerate(self.segments):
            ok = np.zeros(len(seg.docs) and max(d["doc_idx"] for d in seg.docs) + 1, dtype=bool)
            for d in seg.docs:
                if d["doc_id"] in allowed_docs and self.doc_by_id.get(d["doc_id"], {}).get("seg") == s:
                    ok[d["doc_idx"]] = True
            masks.append(ok[seg.passage_doc] if seg.rows else np.zeros(0, dtype=bool))
        return masks

    # ------------------------------------------------------------------ dense
    def dense(self, qvec: np.ndarray, k: int, masks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Global rows and cosines of the ``k`` nearest live vectors, best first;
        only rows allowed by ``masks`` (per segment) when given."""
        all_rows, all_scores = [], []
        for s, seg in enumerate(self.segments):
            allowed = self.live[s]
            if masks is not None:
                allowed = masks[s] if allowed is None else (allowed & masks[s])
            if seg.rows == 0 or (allowed is not None and not allowed.any()):
                continue
            rows, scores = seg.vectors.search(qvec, k, allowed)
            all_rows.append(rows + self.offsets[s])
            all_scores.append(scores)
        if not all_rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        rows, scores = np.concatenate(all_rows), np.concatenate(all_scores)
        order = np.lexsort((rows, -scores))[:k]
        return rows[order], scores[order]

    def sample_vectors(self) -> np.ndarray:
        """The dense calibration sample: vectors of the live passages with the smallest id
        hashes, so the same documents give the same sample however they are segmented."""
        with self._stats_lock:
            if self._sample is None:
                cand_rows, cand_hash = [], []
                for s, (seg, live) in enumerate(zip(self.segments, self.live)):
                    if seg.rows == 0:
                        continue
                    h = np.asarray(seg.idhash)
                    rows = np.arange(seg.rows, dtype=np.int64) if live is None else np.flatnonzero(live)
                    h = h[rows]
                    if len(rows) > SAMPLE_SIZE:
                        pick = np.argpartition(h, SAMPLE_SIZE - 1)[:SAMPLE_SIZE]
                        rows, h = rows[pick], h[pick]
                    cand_rows.append(rows + self.offsets[s])
                    cand_hash.append(h)
                if cand_rows:
                    rows, h = np.concatenate(cand_rows), np.concatenate(cand_hash)
                    rows = np.sort(rows[np.argsort(h, kind="stable")[:SAMPLE_SIZE]])
                    self._sample = self.vectors(rows)
                else:
                    self._sample = np.zeros((0, self.dim), dtype=np.float32)
            return self._sample

    # ------------------------------------------------------------------ lexical
    def term(self, term: str) -> tuple[int, list[tuple[int, np.ndarray, np.ndarray]]]:
        """A term's live document frequency and its live postings per segment."""
        with self._stats_lock:
            hit = self._terms.get(term)
            if hit is not None:
                self._terms.move_to_end(term)
                return hit
        df = 0
        parts = []
        for s, (seg, live) in enumerate(zip(self.segments, self.live)):
            found = seg.postings.postings(term)
            if found is None:
                continue
            rows, tf = found
            if live is not None:
                keep = live[rows]
                rows, tf = rows[keep], tf[keep]
            if len(rows):
                df += len(rows)
                parts.append((s, rows, tf))
        with self._stats_lock:
            self._terms[term] = (df, parts)
            while len(self._terms) > 4096:
                self._terms.popitem(last=False)
        return df, parts

    def idf(self, term: str) -> float:
        df, _ = self.term(term)
        return bm25.idf(self.n_live, df) if df else 0.0

    def has_term(self, term: str) -> bool:
        return self.term(term)[0] > 0

    def _bm25_cached(self, tokens, k1: float, b: float) -> np.ndarray:
        """:meth:`bm25`, remembered for the last query (a search asks for the top rows,
        then for the scores of the dense channel's rows)."""
        key = (tuple(dict.fromkeys(tokens)), k1, b)
        with self._stats_lock:
            if self._last_bm25 is not None and self._last_bm25[0] == key:
                return self._last_bm25[1]
        scores = self.bm25(tokens, k1, b)
        with self._stats_lock:
            self._last_bm25 = (key, scores)
        return scores

    def bm25_top(self, tokens, k1: float, b: float, k: int,
                 masks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` best BM25 matches (only rows ``masks`` allows)."""
        return bm25.top_k(self._bm25_cached(tokens, k1, b), k, None if masks is None else np.concatenate(masks))

    def bm25_of(self, tokens, k1: float, b: float, rows) -> dict[int, float]:
        """BM25 scores of the given rows."""
        scores = self._bm25_cached(tokens, k1, b)
        return {int(r): float(scores[r]) for r in rows}

    def bm25(self, tokens, k1: float, b: float) -> np.ndarray:
        """BM25 score of every global row for the query ``tokens`` (each distinct term once)."""
        out = np.zeros(self.total_rows, dtype=np.float32)
        n, total = self.lexical_stats()
        if n == 0:
            return out
        avgdl = total / n
        for tok in dict.fromkeys(tokens):
            df, parts = self.term(tok)
            if not df:
                continue
            term_idf = bm25.idf(n, df)
            for s, rows, tf in parts:
                lengths = self.segments[s].postings.lengths[rows]
                out[rows + self.offsets[s]] += bm25.weights(tf, lengths, term_idf, avgdl, k1, b)
        return out
