"""A library in Milvus read as a :class:`kb.store.base.Snapshot` (the same rows, scores and
documents as the local store's)."""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import KBError
from kb.store import bm25
from kb.store.base import CHILD_FIELDS, LEVEL_FIELDS, OUTLINE_FIELDS, SAMPLE_SIZE, Allowed, Snapshot
from kb.store.milvus.library import ALL, MAX_LIMIT, SHOWN, MilvusLibrary, row_key, term_hash


class MilvusSnapshot(Snapshot):
    """A library in Milvus as a :class:`kb.store.base.Snapshot`: rows are the passages' INT64
    keys. Every call to Milvus is a round trip (tens of ms on Milvus Lite), so both searches
    return the candidates' rows with their vectors, and rows are kept (a version's rows do
    not change) for the views that follow."""

    def __init__(self, lib: MilvusLibrary, manifest: dict, cache_rows: int = 20_000) -> None:
        self.lib = lib
        self.location = lib.loc.uri
        self.manifest = manifest
        written = manifest.get("bm25") or {}
        self.bm25_written = (written["k1"], written["b"]) if written else None
        self.docs = lib.documents()
        self.doc_by_id = {d["doc_id"]: d for d in self.docs}
        self.df = lib.document_frequencies()
        self._n_live = int(manifest["passages"])
        self.dim = int(manifest["embedder"]["dim"])
        self._sample: np.ndarray | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, dict | None] = OrderedDict()  # key -> row (None: no such row)
        self._last_top: OrderedDict[tuple, dict[int, float]] = OrderedDict()  # query terms -> BM25 top scores
        self._cache_rows = cache_rows
        self.lite = lib.loc.lite

    # ------------------------------------------------------------------ statistics
    @property
    def version(self) -> str:
        return str(self.manifest.get("generation"))

    @property
    def n_live(self) -> int:
        return self._n_live

    def is_stale(self) -> bool:
        m = self.lib.manifest()
        return m is None or m.get("generation") != self.manifest.get("generation")

    def close(self) -> None:
        self.lib.close()

    def _idf(self, df: int) -> float:
        # an interrupted run can leave frequencies ahead of the passage count: IDF stays positive
        return bm25.idf(max(self.n_live, df), df)

    def idf(self, term: str) -> float:
        df = self.df.get(term_hash(term), 0)
        return self._idf(df) if df else 0.0

    def has_term(self, term: str) -> bool:
        return self.df.get(term_hash(term), 0) > 0

    # ------------------------------------------------------------------ rows
    def _keep(self, rows: list[dict]) -> None:
        with self._lock:
            for r in rows:
                k = int(r["key"])
                old = self._cache.get(k)
                self._cache[k] = {**old, **r} if old else r
                self._cache.move_to_end(k)
            while len(self._cache) > self._cache_rows:
                self._cache.popitem(last=False)

    def _get(self, keys: list[int], need: tuple[str, ...] = ()) -> dict[int, dict]:
        """Rows of these keys with the shown fields and the ``need``ed ones (``dense``,
        ``sparse``: decoding them costs, so only when asked): from the cache, the rest in
        one query. Rows of documents that are not committed are left out."""
        out: dict[int, dict] = {}
        missing = []
        with self._lock:
            for k in keys:
                r = self._cache.get(k, False)
                if r is None:
                    continue  # known not to exist
                if r is not False and all(f in r for f in need):
                    out[k] = r
                else:
                    missing.append(k)
        if missing:
            found = self.lib.query_in(self.lib.P, "key", missing, list(SHOWN) + list(need))
            self._keep(found)
            got = {int(r["key"]) for r in found}
            with self._lock:
                for k in missing:
                    if k not in got:
                        self._cache[k] = None
                out.update({k: self._cache[k] for k in got if k in self._cache})
        return {k: r for k, r in out.items() if r["doc_id"] in self.doc_by_id}

    @staticmethod
    def _shape(r: dict) -> dict:
        out = {k: r[k] for k in SHOWN if k != "key"}
        out["heading_path"] = json.loads(r["heading_path"])
        out["parent"] = r["parent"] or None
        out["row"] = int(r["key"])
        return out

    def rows(self, rows) -> dict[int, dict[str, Any]]:
        keys = list(dict.fromkeys(int(r) for r in rows))
        return {k: self._shape(r) for k, r in self._get(keys).items()}

    def by_ids(self, ids) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(ids))
        found = self._get([row_key(i) for i in ids])
        return {r["id"]: self._shape(r) for r in found.values() if r["id"] in ids}

    def vectors(self, rows) -> np.ndarray:
        keys = [int(r) for r in rows]
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        got = self._get(list(dict.fromkeys(keys)), ("dense",))
        for i, k in enumerate(keys):
            if k in got:
                out[i] = np.asarray(got[k]["dense"], dtype=np.float32)
        return out

    @staticmethod
    def _filter(allowed: Allowed) -> dict[str, Any]:
        """Search arguments for the passages of these documents. The ids are written as JSON
        string literals: Milvus Lite 3 does not take expression templates (``filter_params``),
        and every id here is one the library itself holds (a filter selects among them), never
        text a user typed."""
        if allowed is None:
            return {}
        return {"filter": f"doc_id in {json.dumps(sorted(allowed), ensure_ascii=False)}"}

    def _check_bm25(self, k1: float, b: float) -> None:
        if self.bm25_written is not None and (k1, b) != tuple(self.bm25_written):
            raise KBError(f"{self.location} was BM25-weighted with k1={self.bm25_written[0]}, "
                          f"b={self.bm25_written[1]}; it cannot score with k1={k1}, b={b}")

    # ------------------------------------------------------------------ channels
    def _search(self, field: str, data, k: int, filt: dict[str, Any], params: dict) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, MAX_LIMIT)
        if k <= 0 or self.n_live == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        want = min(k + 1, MAX_LIMIT)
        while True:
            res = self.lib.call(self.lib.client.search, self.lib.P, data=[data], anns_field=field, limit=want,
                                output_fields=list(SHOWN) + ([field] if field == "dense" else []),
                                search_params={"metric_type": "IP", "params": params},
                                **filt)[0]
            hits = [h for h in res if h["entity"]["doc_id"] in self.doc_by_id]
            # a filtered HNSW search (or uncommitted rows) may give fewer than asked, and rows
            # that tie with the k-th may lie beyond the limit: ask for more
            short = len(hits) < k
            tied = len(hits) > k and float(hits[-1]["distance"]) >= float(hits[k - 1]["distance"])
            if not (short or tied) or len(res) < want or want >= MAX_LIMIT:
                break
            want = min(MAX_LIMIT, want * 4)
        entities = []
        for h in hits:
            e = dict(h["entity"])
            e["key"] = int(h["key"] if "key" in h else h["id"])
            entities.append(e)
        self._keep(entities)
        rows = np.asarray([e["key"] for e in entities], dtype=np.int64)
        scores = np.asarray([float(h["distance"]) for h in hits], dtype=np.float32)
        order = np.lexsort((rows, -scores))[:k]  # equal scores by key: the passage-id hash, as locally
        return rows[order], scores[order]

    def dense(self, qvec: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        params = {} if self.lite else {"ef": max(64, 2 * k)}
        return self._search("dense", np.asarray(qvec, dtype=np.float32).tolist(), k, self._filter(allowed), params)

    def _query_sparse(self, tokens) -> dict[int, float]:
        q: dict[int, float] = {}
        for t, weight in bm25.query_terms(tokens).items():
            h = term_hash(t)
            df = self.df.get(h, 0)
            if df > 0:
                q[h] = q.get(h, 0.0) + self._idf(df) * weight
        return q

    def bm25_top(self, tokens, k1: float, b: float, k: int, allowed: Allowed = None):
        """The ``k`` best BM25 rows. ``k1`` and ``b`` must be those the library was written
        with (:attr:`bm25_written`): the document side is stored weighted."""
        self._check_bm25(k1, b)
        q = self._query_sparse(tokens)
        if not q:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows, scores = self._search("sparse", q, k, self._filter(allowed), {})
        with self._lock:
            self._last_top[tuple(sorted(q.items()))] = dict(zip(rows.tolist(), scores.tolist()))
            while len(self._last_top) > 16:
                self._last_top.popitem(last=False)
        return rows, scores

    def bm25_of(self, tokens, k1: float, b: float, rows) -> dict[int, float]:
        """BM25 of these rows: what the sparse search scored, and for the others the inner
        product of the query's IDF weights with the row's stored weights."""
        self._check_bm25(k1, b)
        q = self._query_sparse(tokens)
        keys = [int(r) for r in rows]
        if not q or not keys:
            return {k: 0.0 for k in keys}
        with self._lock:
            known = dict(self._last_top.get(tuple(sorted(q.items()))) or {})
        out = {k: known[k] for k in keys if k in known}
        rest = [k for k in dict.fromkeys(keys) if k not in out]
        # a row the top-k search did not return scores at most its last score: still computed exactly
        got = self._get(rest, ("sparse",)) if rest else {}
        for k in rest:
            vec = got[k]["sparse"] if k in got else {}
            out[k] = float(sum(np.float32(w) * np.float32(vec.get(h, 0.0)) for h, w in q.items()))
        return out

    def sample_vectors(self) -> np.ndarray:
        """The vectors of the live passages with the smallest keys (= id hashes): the same
        calibration sample as the local store's."""
        with self._lock:
            if self._sample is not None:
                return self._sample
        n = self.n_live
        if n == 0:
            sample = np.zeros((0, self.dim), dtype=np.float32)
        else:
            span = 1 << 64
            frac = min(1.0, 4.0 * SAMPLE_SIZE / n)
            while True:
                cut = -(1 << 63) + int(span * frac)
                expr = f"key < {cut}" if frac < 1.0 else ALL
                found = [r for r in self.lib.query(self.lib.P, expr, ["key", "doc_id", "dense"], limit=MAX_LIMIT)
                         if r["doc_id"] in self.doc_by_id]
                if len(found) >= min(SAMPLE_SIZE, n) or frac >= 1.0:
                    break
                frac = min(1.0, frac * 4)
            found.sort(key=lambda r: int(r["key"]))
            sample = np.asarray([r["dense"] for r in found[:SAMPLE_SIZE]], dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            self._sample = sample
        return sample

    # ------------------------------------------------------------------ documents
    def _rows(self, expr: str, fields: list[str]) -> list[dict]:
        rows = self.lib.query(self.lib.P, expr, fields, limit=MAX_LIMIT)
        for r in rows:
            if "parent" in r:
                r["parent"] = r["parent"] or None
            if "heading_path" in r:
                r["heading_path"] = json.loads(r["heading_path"])
        return sorted(rows, key=lambda r: r.get("ordinal", 0))

    def outline(self, doc_id: str) -> list[dict]:
        fields = list(OUTLINE_FIELDS)
        rows = self._rows(f"doc_id == {json.dumps(doc_id)}", fields + ["ordinal"])
        return [{k: r[k] for k in fields} for r in rows]

    def level(self, doc_id: str, parent: str | None) -> list[dict]:
        fields = list(LEVEL_FIELDS)
        rows = self._rows(f"doc_id == {json.dumps(doc_id)} and parent == {json.dumps(parent or '')}", fields)
        return [{k: r[k] for k in fields} for r in rows]  # not the primary key Milvus adds

    def children(self, doc_id: str, passage_id: str) -> list[dict]:
        rows = self._rows(f"parent == {json.dumps(passage_id)}", list(CHILD_FIELDS) + ["ordinal"])
        return [{k: r[k] for k in CHILD_FIELDS} for r in rows]

    def descendants(self, doc_id: str, passage_id: str) -> set[str]:
        out: set[str] = set()
        frontier = [passage_id]
        while frontier:
            found = self.lib.query_in(self.lib.P, "parent", frontier, ["id"])
            frontier = [r["id"] for r in found if r["id"] not in out]
            out.update(frontier)
        return out

    def doc_text(self, doc_id: str) -> str:
        parts = self.lib.query(self.lib.T, f"doc_id == {json.dumps(doc_id)}", ["part", "chunk"], limit=MAX_LIMIT)
        return "".join(p["chunk"] for p in sorted(parts, key=lambda p: p["part"]))


    def passage_kinds(self) -> dict[str, int]:
        kinds: Counter[str] = Counter()
        for r in self.lib.query_all(self.lib.P, ALL, ["kind", "doc_id"]):
            if r["doc_id"] in self.doc_by_id:
                kinds[r["kind"]] += 1
        return dict(kinds)

    def describe(self) -> dict[str, Any]:
        loc, m = self.lib.loc, self.manifest
        size = sum(f.stat().st_size for f in Path(loc.uri).rglob("*") if f.is_file()) if loc.lite else None
        return {
            "index": loc.uri, "store": "milvus-lite" if loc.lite else "milvus",
            "collections": [self.lib.P, self.lib.D, self.lib.T, self.lib.S],
            "vector_index": "milvus " + ("FLAT" if loc.lite else "HNSW"), "segments": [],
            "vocabulary": len(self.df), "size_bytes": size, "format_version": m.get("format"),
            "bm25_average_length": {"written": m.get("avgdl_written"),
                                    "now": m["total_length"] / m["passages"] if m.get("passages") else None},
        }
