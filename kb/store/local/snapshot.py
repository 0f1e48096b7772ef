"""The local store's snapshot: one published generation of an index folder, its segments
minus their deleted documents, read as one row space (:class:`kb.store.base.Snapshot`)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from kb.store import bm25
from kb.store.base import OUTLINE_FIELDS, SAMPLE_SIZE, Allowed, Snapshot
from kb.store.local.layout import IndexDir
from kb.store.local.segments import PassageStore, SegmentReader


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["heading_path"] = json.loads(r["heading_path"])
    return rows


class LocalSnapshot(Snapshot):
    """The live rows of a generation: its segments, minus deleted documents, as one row
    space (global row = segment offset + local row; deleted rows are never returned)."""

    def __init__(self, segments: list[SegmentReader], deleted: list[np.ndarray], location: str = "",
                 gen: Path | None = None, manifest: dict[str, Any] | None = None) -> None:
        self.location = location
        self.gen = gen
        self.manifest = manifest or {}
        self.segments = segments
        self.deleted = deleted
        self.live: list[np.ndarray | None] = []
        self.offsets = np.zeros(len(segments) + 1, dtype=np.int64)
        for i, (seg, dead) in enumerate(zip(segments, deleted)):
            self.offsets[i + 1] = self.offsets[i] + seg.rows
            self.live.append(~np.isin(seg.passage_doc, dead) if len(dead) else None)
        self.total_rows = int(self.offsets[-1])
        self.docs: list[dict[str, Any]] = []
        self._doc_slots: list[int] = []  # per segment, one more than its highest document number
        for i, (seg, dead) in enumerate(zip(segments, deleted)):
            gone = set(dead.tolist())
            self.docs += [{**d, "seg": i} for d in seg.docs if d["doc_idx"] not in gone]
            self._doc_slots.append(max((d["doc_idx"] for d in seg.docs), default=-1) + 1)
        self.doc_by_id = {d["doc_id"]: d for d in self.docs}
        self._position = {d["doc_id"]: i for i, d in enumerate(self.docs)}
        self._doc_seg = np.asarray([d["seg"] for d in self.docs], dtype=np.int64)
        self._doc_number = np.asarray([d["doc_idx"] for d in self.docs], dtype=np.int64)
        self._stats_lock = threading.Lock()
        self._terms: OrderedDict[str, tuple[int, list]] = OrderedDict()
        self._sample: np.ndarray | None = None
        self._lexical: tuple[int, int] | None = None
        self._last_bm25: tuple[tuple, np.ndarray] | None = None
        self._last_masks: tuple[frozenset[str], list[np.ndarray]] | None = None
        self._row_keys: np.ndarray | None = None

    @property
    def version(self) -> str:
        return self.gen.name if self.gen is not None else ""

    def is_stale(self) -> bool:
        return IndexDir(self.location).current() != self.gen

    def recheck(self) -> None:
        for seg in self.segments:
            seg.recheck()

    def close(self) -> None:
        """Drop the segment readers (shared with other snapshots: each closes when the last
        snapshot holding it is gone)."""
        self.__init__([], [], self.location, self.gen, self.manifest)

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

    def _store(self, doc_id: str) -> PassageStore:
        return self.segments[self.doc_by_id[doc_id]["seg"]].store

    # ------------------------------------------------------------------ documents
    def level(self, doc_id: str, parent: str | None) -> list[dict[str, Any]]:
        return _decoded(self._store(doc_id).level(doc_id, parent))

    def children(self, doc_id: str, passage_id: str) -> list[dict[str, Any]]:
        return _decoded(self._store(doc_id).children(passage_id))

    def descendants(self, doc_id: str, passage_id: str) -> set[str]:
        return self._store(doc_id).descendants(passage_id)

    def doc_text(self, doc_id: str) -> str:
        return self._store(doc_id).doc_text(doc_id)

    def outline(self, doc_id: str) -> list[dict[str, Any]]:
        return _decoded(self._store(doc_id).passages_of(doc_id, ", ".join(f'"{c}"' for c in OUTLINE_FIELDS)))

    def passage_kinds(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for s, seg in enumerate(self.segments):
            for r in seg.store.kinds_by_doc():
                if self.doc_by_id.get(r["doc_id"], {}).get("seg") == s:
                    kinds[r["kind"]] = kinds.get(r["kind"], 0) + r["n"]
        return kinds

    def describe(self) -> dict[str, Any]:
        folders = ([self.gen] if self.gen is not None else []) + [seg.path for seg in self.segments]
        vocab: set[str] = set()
        for seg in self.segments:
            vocab.update(seg.postings.vocab)
        return {
            "index": self.location,
            "vector_index": "+".join(sorted({seg.vectors.kind for seg in self.segments})),
            "segments": [{k: e[k] for k in ("name", "rows", "deleted_rows")}
                         for e in self.manifest.get("segments", [])],
            "vocabulary": len(vocab),
            "size_bytes": sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file()),
            "format_version": self.manifest.get("format_version"),
        }

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

    def _masks(self, allowed: Allowed) -> list[np.ndarray] | None:
        """Per segment, which rows belong to the ``allowed`` documents (and are live); then the
        same over the global rows (the segments' masks end to end)."""
        if allowed is None:
            return None
        with self._stats_lock:
            last = self._last_masks
            if last is not None and (last[0] is allowed or last[0] == allowed):
                return last[1]
        positions = getattr(allowed, "positions", None)
        if positions is None or getattr(allowed, "of", None) is not self.docs:  # plain ids (or another version's)
            positions = np.asarray([self._position[i] for i in allowed if i in self._position], dtype=np.int64)
        seg_of, number_of = self._doc_seg[positions], self._doc_number[positions]  # the live copy of each
        masks = []
        for s, seg in enumerate(self.segments):
            ok = np.zeros(self._doc_slots[s], dtype=bool)
            ok[number_of[seg_of == s]] = True
            masks.append(ok[seg.passage_doc] if seg.rows else np.zeros(0, dtype=bool))
        masks.append(np.concatenate(masks) if len(masks) > 1 else masks[0] if masks else np.zeros(0, dtype=bool))
        with self._stats_lock:
            self._last_masks = (allowed, masks)
        return masks

    # ------------------------------------------------------------------ dense
    def row_keys(self) -> np.ndarray:
        """Every global row's passage-id hash: the order of equal scores, the same in any
        segmentation and on Milvus (whose row keys are these hashes)."""
        with self._stats_lock:
            if self._row_keys is None:
                parts = [np.asarray(seg.idhash, dtype=np.uint64) for seg in self.segments if seg.rows]
                self._row_keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
            return self._row_keys

    def dense(self, qvec: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        """Global rows and cosines of the ``k`` nearest live vectors, best first; equal
        cosines by passage-id hash, also where the k-th place is shared."""
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        masks = self._masks(allowed)
        all_rows, all_scores = [], []
        for s, seg in enumerate(self.segments):
            ok = self.live[s]
            if masks is not None:
                ok = masks[s] if ok is None else (ok & masks[s])
            if seg.rows == 0 or (ok is not None and not ok.any()):
                continue
            want = k + 1
            while True:  # until the vectors that tie with the k-th (if any) are all in
                rows, scores = seg.vectors.search(qvec, want, ok)
                if len(rows) < want or scores[-1] < scores[k - 1]:
                    break
                want *= 4
            all_rows.append(rows + self.offsets[s])
            all_scores.append(scores)
        if not all_rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        rows, scores = np.concatenate(all_rows), np.concatenate(all_scores)
        order = np.lexsort((self.row_keys()[rows], -scores))[:k]
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
        key = (tuple(bm25.query_terms(tokens).items()), k1, b)
        with self._stats_lock:
            if self._last_bm25 is not None and self._last_bm25[0] == key:
                return self._last_bm25[1]
        scores = self.bm25(tokens, k1, b)
        with self._stats_lock:
            self._last_bm25 = (key, scores)
        return scores

    def bm25_top(self, tokens, k1: float, b: float, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` best BM25 matches."""
        masks = self._masks(allowed)
        return bm25.top_k(self._bm25_cached(tokens, k1, b), k, None if masks is None else masks[-1], self.row_keys())

    def bm25_of(self, tokens, k1: float, b: float, rows) -> dict[int, float]:
        """BM25 scores of the given rows."""
        scores = self._bm25_cached(tokens, k1, b)
        return {int(r): float(scores[r]) for r in rows}

    def bm25(self, tokens, k1: float, b: float) -> np.ndarray:
        """BM25 score of every global row for the query ``tokens`` (each distinct term once;
        a mapping of terms to weights scales each term's part)."""
        out = np.zeros(self.total_rows, dtype=np.float32)
        n, total = self.lexical_stats()
        if n == 0:
            return out
        avgdl = total / n
        for tok, weight in bm25.query_terms(tokens).items():
            df, parts = self.term(tok)
            if not df:
                continue
            term_idf = bm25.idf(n, df) * weight
            for s, rows, tf in parts:
                lengths = self.segments[s].postings.lengths[rows]
                out[rows + self.offsets[s]] += bm25.weights(tf, lengths, avgdl, k1, b, scale=term_idf)
        return out
