"""kb on Milvus: the same library in Milvus Lite (an embedded engine in one ``.db``
folder) or in a Milvus server or cluster (``http(s)://host:19530``).

Four collections per library (``KB_MILVUS_COLLECTION``, default ``kb``)::

    kb_passages   one row per passage: key (INT64 = id hash, the row number ranking sees),
                  id, doc_id/source/date (INVERTED indexes: the page's filters), the rows a
                  view shows, vkey (vector reuse), length, dense (FLOAT_VECTOR) and sparse
                  (SPARSE_FLOAT_VECTOR: BM25 document-side weights)
    kb_docs       one row per document (what a re-index compares with the folder)
    kb_text       documents' full text in chunks (a VARCHAR holds 64 KiB)
    kb_stats      the manifest (bucket -1) and corpus-wide document frequencies: bucket b
                  holds {term hash: df} for the terms whose hash is b modulo 256

BM25 is computed by kb, not by Milvus (whose built-in BM25 takes IDF per segment): the
document side stores saturated term weights ``tf·(k1+1)/(tf + k1·(1-b+b·len/avgdl))``
with the average length frozen when the passage is written; the query side weights each
term by its IDF from the document frequencies kept in ``kb_stats``. The inner product is
then the BM25 score of the local store, up to the drift of the average length between
writes (``kb compact`` re-weights every passage with today's average).

A run writes documents as: delete by ``doc_id`` (whatever an interrupted run left), insert
passages and text, then the document row — the commit of that document. The manifest is
marked ``writing`` first and ``clean`` last; a run that finds ``writing`` recounts the
statistics from the passages. Readers skip passages whose document row does not exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import IndexBusy, IndexNotFound, KBError
from kb.records import LOCATORS_KEY
from kb.store import bm25
from kb.store.base import id_hash

EXTRA = "pip install 'kb[milvus]'"
FORMAT = 1
BUCKETS = 256
META = -1  # the manifest's row in kb_stats
MANIFEST_ROW_BYTES = 60_000  # a longer manifest is kept in kb_text parts (MANIFEST_DOC)
MANIFEST_DOC = "#manifest"  # the kb_text "document" whose parts hold a long manifest (no real id starts with #)
TEXT_CHUNK = 15_000  # characters per kb_text row: at most 60,000 bytes of UTF-8
WRITE_BATCH = 512  # passages per insert
IN_BATCH = 1000  # keys per `in [...]` filter
MAX_LIMIT = 16_384  # Milvus' largest topk / query limit
CONNECT_TIMEOUT = 10.0
# A writer on a server renews its lease in the manifest; a "writing" manifest older than this
# is an interrupted run (recovered), a fresher one another writer (refused).
LEASE_S = 120.0
ALL = f"key >= {-(1 << 63)}"  # every passage
EMPTY = 0xFFFFFFFE  # the one dimension of a passage without words (Milvus rejects an empty vector)
SHOWN = ("key", "id", "doc_id", "kind", "parent", "ordinal", "start", "end", "orig_start", "orig_end",
         "heading_path", "text")
DOC_FIELDS = ("doc_id", "path", "title", "meta", "content_hash", "encoding", "format", "size", "mtime_ns",
              "ctime_ns", "n_passages", "indexed_at")


def term_hash(term: str) -> int:
    """A term's dimension in the sparse vectors (32 bits; 0xFFFFFFFF is not a valid index)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little") % 0xFFFFFFFF


def text_rows(doc_id: str, key: str, text: str) -> list[dict]:
    """kb_text rows holding ``text`` in parts of :data:`TEXT_CHUNK` characters (one, empty, for
    an empty text), keyed ``key#part``."""
    return [{"key": f"{key}#{part}", "doc_id": doc_id, "part": part, "chunk": text[start: start + TEXT_CHUNK],
             "v": [0.0, 0.0]} for part, start in enumerate(range(0, max(len(text), 1), TEXT_CHUNK))]


def row_key(passage_id: str) -> int:
    """The passage's primary key: its 64-bit id hash shifted into INT64, order kept (the
    dense calibration sample is the smallest keys, as the local store's smallest hashes)."""
    return id_hash(passage_id) - (1 << 63)


def doc_weights(tokens: list[str], avgdl: float, k1: float, b: float) -> dict[int, float]:
    """The document side of BM25 for one passage (:func:`kb.store.bm25.weights` without the
    IDF, which the query side carries)."""
    counts: Counter[int] = Counter(term_hash(t) for t in tokens)
    if not counts:
        return {}
    keys = list(counts)
    tf = np.asarray([counts[k] for k in keys], dtype=np.float32)
    w = bm25.weights(tf, np.float32(len(tokens)), avgdl, k1, b)
    return dict(zip(keys, w.tolist()))


# ---------------------------------------------------------------------------- where and how to connect
@dataclass(frozen=True)
class Location:
    uri: str
    prefix: str = "kb"

    @classmethod
    def parse(cls, location: str) -> Location:
        prefix = os.environ.get("KB_MILVUS_COLLECTION") or "kb"
        if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha():
            raise KBError(f"KB_MILVUS_COLLECTION={prefix!r} is not a valid collection name (letters, digits, _)")
        uri = str(location)
        if uri.endswith(".db"):
            uri = str(Path(uri).expanduser().resolve())
        return cls(uri, prefix)

    @property
    def lite(self) -> bool:
        return self.uri.endswith(".db")

    def __str__(self) -> str:
        return self.uri

    def _beside(self, suffix: str) -> Path:
        """A file of kb's own for this library: beside a Lite ``.db``; for a server, in the
        user's cache folder under a name derived from the URI and collection prefix."""
        if self.lite:
            return Path(self.uri + suffix)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kb" / "milvus"
        cache.mkdir(parents=True, exist_ok=True)
        return cache / (hashlib.sha1(f"{self.uri}\x00{self.prefix}".encode()).hexdigest()[:16] + suffix)

    @property
    def pending_path(self) -> Path:
        """Vectors of an unfinished run (see :class:`kb.store.local.layout.PendingVectors`)."""
        return self._beside(".pending.sqlite" if self.lite else ".sqlite")

    @property
    def ocr_cache_path(self) -> Path:
        """OCR results by page image, kept between runs (never the pending-vectors file)."""
        return self._beside(".ocr-cache.sqlite")

    def name(self, what: str) -> str:
        return f"{self.prefix}_{what}"


def _pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise KBError(f"the Milvus store needs the milvus extra — {EXTRA}") from e
    # the client logs every failed call with a traceback; kb turns them into one sentence
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # Lite lacks AllocTimestamp; the client copes
    return pymilvus


def _check_lite_lock(path: Path) -> None:
    """Milvus Lite lets one process open a ``.db``: say so before its own traceback does."""
    lock = path / "LOCK"
    if not lock.exists():
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError as e:
        raise IndexBusy(f"index {path} is in use by another process (Milvus Lite opens a .db in one process "
                        "at a time) — stop the page or API serving it, or use a Milvus server") from e
    finally:
        os.close(fd)


def milvus_error(loc: Location, e: BaseException) -> KBError:
    """A client error as one sentence."""
    msg = str(getattr(e, "message", "") or e)
    low = msg.lower()
    if "lock" in low and loc.lite:
        return IndexBusy(f"index {loc} is in use by another process — stop the page or API serving it")
    if any(w in low for w in ("auth", "credential", "unauthenticated", "permission denied", "password")):
        return KBError(f"Milvus at {loc} refused the credentials (authentication failed) — check KB_MILVUS_TOKEN")
    if any(w in low for w in ("fail connecting", "unavailable", "deadline", "timed out", "connection refused",
                              "unimplemented")):
        return KBError(f"cannot reach Milvus at {loc} ({msg.splitlines()[0][:160]}) — is the server running?")
    return KBError(f"Milvus at {loc} failed: {msg.splitlines()[0][:200] if msg else type(e).__name__}")


class _Clients:
    """One client per location per process, counted: Milvus Lite's embedded server stops
    when the last user releases it (``MilvusClient.close`` alone leaves it running)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, list] = {}  # uri -> [client, users]

    def acquire(self, loc: Location, create: bool):
        with self.lock:
            if loc.uri in self.open:
                self.open[loc.uri][1] += 1
                return self.open[loc.uri][0]
            if loc.lite:
                path = Path(loc.uri)
                if not path.exists() and not create:
                    raise IndexNotFound(f"no index at {path} — run `kb index FOLDER --store {path}` first")
                if path.exists() and not path.is_dir():
                    raise KBError(f"{path} is a file, not a Milvus Lite index — choose another --store path")
                _check_lite_lock(path)
            pm = _pymilvus()
            token = os.environ.get("KB_MILVUS_TOKEN") or ""
            try:
                client = pm.MilvusClient(uri=loc.uri, token=token, timeout=CONNECT_TIMEOUT)
            except pm.exceptions.MilvusException as e:
                raise milvus_error(loc, e) from e
            except Exception as e:  # Lite reports a held lock as a connection error
                raise milvus_error(loc, e) from e
            self.open[loc.uri] = [client, 1]
            return client

    def release(self, loc: Location) -> None:
        with self.lock:
            entry = self.open.get(loc.uri)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self.open[loc.uri]
        try:
            entry[0].close()
        finally:
            if loc.lite:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(loc.uri)


CLIENTS = _Clients()


def release(location: str) -> None:
    """Drop every reference this process holds to ``location`` (tests, long-lived servers)."""
    loc = Location.parse(location)
    while loc.uri in CLIENTS.open:
        CLIENTS.release(loc)


# ---------------------------------------------------------------------------- the library in Milvus
class MilvusLibrary:
    """The four collections of one kb library and the operations kb needs of them."""

    def __init__(self, loc: Location, create: bool = False) -> None:
        self.loc = loc
        self.pm = _pymilvus()
        self.client = CLIENTS.acquire(loc, create)
        self.closed = False
        self._loaded = False
        self.P, self.D, self.T, self.S = (loc.name(w) for w in ("passages", "docs", "text", "stats"))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            CLIENTS.release(self.loc)

    def call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self.pm.exceptions.MilvusException as e:
            raise milvus_error(self.loc, e) from e

    # ------------------------------------------------------------------ schema
    def exists(self) -> bool:
        if not self.call(self.client.has_collection, self.S):
            return False
        if not self._loaded:  # a collection is searchable once loaded (after a restart, a create)
            for name in (self.P, self.D, self.T, self.S):
                state = self.call(self.client.get_load_state, name)
                if "NotLoad" in str(state.get("state")):
                    self.call(self.client.load_collection, name)
            self._loaded = True
        return True

    def create(self, dim: int) -> None:
        DataType = self.pm.DataType
        c = self.client
        lite = self.loc.lite

        def schema(fields):
            s = c.create_schema(auto_id=False, enable_dynamic_field=False)
            for name, dtype, kw in fields:
                s.add_field(name, dtype, **kw)
            return s

        V = DataType.VARCHAR
        text = {"max_length": 65535}
        short = {"max_length": 256}
        passages = schema([
            ("key", DataType.INT64, {"is_primary": True}),
            ("id", V, short), ("doc_id", V, short), ("source", V, short), ("date", V, short),
            ("kind", V, {"max_length": 32}), ("parent", V, short), ("vkey", V, {"max_length": 64}),
            ("ordinal", DataType.INT64, {}), ("start", DataType.INT64, {}), ("end", DataType.INT64, {}),
            ("orig_start", DataType.INT64, {}), ("orig_end", DataType.INT64, {}), ("length", DataType.INT64, {}),
            ("heading_path", V, text), ("text", V, text),
            ("dense", DataType.FLOAT_VECTOR, {"dim": dim}), ("sparse", DataType.SPARSE_FLOAT_VECTOR, {}),
        ])
        ip = c.prepare_index_params()
        if lite:
            ip.add_index("dense", index_type="FLAT", metric_type="IP")
        else:
            ip.add_index("dense", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 128})
        ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        for f in ("id", "doc_id", "source", "date", "vkey", "parent"):
            ip.add_index(f, index_type="INVERTED")
        self._create(self.P, schema=passages, index_params=ip)

        def small(name, fields, pk_index=()):
            ip = c.prepare_index_params()
            ip.add_index("v", index_type="FLAT", metric_type="L2")
            for f in pk_index:
                ip.add_index(f, index_type="INVERTED")
            self._create(name, schema=schema(fields + [("v", DataType.FLOAT_VECTOR, {"dim": 2})]), index_params=ip)

        small(self.D, [("doc_id", V, {"is_primary": True, "max_length": 256}), ("path", V, text), ("title", V, text),
                       ("meta", V, text), ("source", V, short), ("date", V, short), ("content_hash", V, short),
                       ("encoding", V, short), ("format", V, short), ("indexed_at", V, short),
                       ("size", DataType.INT64, {}), ("mtime_ns", DataType.INT64, {}),
                       ("ctime_ns", DataType.INT64, {}), ("n_passages", DataType.INT64, {})], ("source",))
        small(self.T, [("key", V, {"is_primary": True, "max_length": 300}), ("doc_id", V, short),
                       ("part", DataType.INT64, {}), ("chunk", V, text)], ("doc_id",))
        stats = schema([("bucket", DataType.INT64, {"is_primary": True}), ("meta", V, text),
                        ("df", DataType.SPARSE_FLOAT_VECTOR, {})])
        ip = c.prepare_index_params()
        ip.add_index("df", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        self._create(self.S, schema=stats, index_params=ip)  # last: its existence says the library does

    def _create(self, name: str, schema, index_params) -> None:
        """Create a collection unless an interrupted first run already did."""
        if not self.call(self.client.has_collection, name):
            self.call(self.client.create_collection, name, schema=schema, index_params=index_params,
                      consistency_level="Strong")

    def flush(self) -> None:
        """Seal what was written into indexed segments (Milvus Lite searches unflushed rows
        by brute force, rebuilding their index on every search)."""
        for name in (self.P, self.D, self.T, self.S):
            self.call(self.client.flush, name)

    def drop(self) -> None:
        for name in (self.P, self.D, self.T, self.S):
            if self.call(self.client.has_collection, name):
                self.call(self.client.drop_collection, name)

    # ------------------------------------------------------------------ reading
    def query(self, collection: str, filter: str, fields: list[str], limit: int | None = None) -> list[dict]:
        kw = {"limit": limit} if limit else {}
        return self.call(self.client.query, collection, filter=filter, output_fields=fields, **kw)

    def query_all(self, collection: str, filter: str, fields: list[str], batch: int = 2000) -> Iterator[dict]:
        """Every row matching ``filter`` (in pages: a query returns at most 16,384 rows)."""
        it = self.call(self.client.query_iterator, collection, batch_size=batch, filter=filter, output_fields=fields)
        try:
            while True:
                page = self.call(it.next)
                if not page:
                    break
                yield from page
        finally:
            it.close()

    def query_in(self, collection: str, field: str, values: list, fields: list[str]) -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(values), IN_BATCH):
            chunk = values[i: i + IN_BATCH]
            expr = f"{field} in {json.dumps(chunk, ensure_ascii=False)}"
            out += self.query(collection, expr, fields, limit=MAX_LIMIT)
        return out

    def manifest(self) -> dict | None:
        if not self.exists():
            return None
        for _ in range(3):  # a manifest written meanwhile may have replaced the parts just named
            rows = self.query(self.S, f"bucket == {META}", ["meta"])
            if not rows:
                return None
            data = json.loads(rows[0]["meta"])
            if "manifest_parts" not in data:
                return data
            found = self.query(self.T, f"doc_id == {json.dumps(MANIFEST_DOC)} and key like "
                               f"{json.dumps(data['manifest_sha1'] + '#%')}", ["part", "chunk"], limit=MAX_LIMIT)
            text = "".join(p["chunk"] for p in sorted(found, key=lambda p: p["part"]))
            whole = len(found) == data["manifest_parts"]
            if whole and hashlib.sha1(text.encode()).hexdigest() == data["manifest_sha1"]:
                return json.loads(text)
        raise KBError(f"{self.loc.uri}: the manifest's parts are missing or damaged — run `kb index --rebuild`")

    def document_frequencies(self) -> dict[int, int]:
        df: dict[int, int] = {}
        for r in self.query_all(self.S, "bucket >= 0", ["df"]):
            df.update({int(k): int(round(v)) for k, v in r["df"].items()})
        return df

    def _doc_rows(self, fields: list[str]) -> list[dict]:
        docs = list(self.query_all(self.D, 'doc_id != ""', fields))
        for d in docs:
            d["ctime_ns"] = d["ctime_ns"] if d["ctime_ns"] >= 0 else None  # -1: not recorded
        return docs

    def files(self) -> list[dict]:
        """What a re-index compares with the folder (no texts)."""
        return self._doc_rows(["doc_id", "path", "content_hash", "size", "mtime_ns", "ctime_ns", "n_passages"])

    def documents(self) -> list[dict]:
        docs = self._doc_rows(list(DOC_FIELDS))
        for d in docs:
            d["meta"] = json.loads(d["meta"])
        docs.sort(key=lambda d: d["path"])
        return docs

    # ------------------------------------------------------------------ writing
    def write_manifest(self, manifest: dict) -> None:
        """The manifest in its kb_stats row; one too long for a row (a large dictionary) goes to
        kb_text in parts named by its SHA-1, which the row then names (parts of earlier ones
        are removed after)."""
        text = json.dumps(manifest, ensure_ascii=False)
        if len(text.encode()) <= MANIFEST_ROW_BYTES:
            row = text
        else:
            digest = hashlib.sha1(text.encode()).hexdigest()
            parts = text_rows(MANIFEST_DOC, digest, text)
            for i in range(0, len(parts), 16):
                self.call(self.client.upsert, self.T, parts[i: i + 16])
            row = json.dumps({"manifest_sha1": digest, "manifest_parts": len(parts)})
        self.call(self.client.upsert, self.S, [{"bucket": META, "meta": row, "df": {0: 1.0}}])
        stale = f"doc_id == {json.dumps(MANIFEST_DOC)}"
        if row is not text:
            stale += f" and not (key like {json.dumps(digest + '#%')})"
        self.call(self.client.delete, self.T, filter=stale)

    def write_frequencies(self, df: dict[int, int], buckets: set[int] | None = None) -> None:
        """Upsert the buckets that changed (all when ``buckets`` is None); empty ones are deleted."""
        by_bucket: dict[int, dict[int, float]] = {}
        for h, n in df.items():
            b = h % BUCKETS
            if (buckets is None or b in buckets) and n > 0:
                by_bucket.setdefault(b, {})[h] = float(n)
        wanted = set(range(BUCKETS)) if buckets is None else buckets
        rows = [{"bucket": b, "meta": "", "df": by_bucket[b]} for b in sorted(wanted) if b in by_bucket]
        empty = [b for b in sorted(wanted) if b not in by_bucket]
        for i in range(0, len(rows), 16):
            self.call(self.client.upsert, self.S, rows[i: i + 16])
        if empty:
            self.call(self.client.delete, self.S, filter=f"bucket in {empty}")

    def delete_docs(self, doc_ids: list[str]) -> tuple[int, int, Counter]:
        """Delete these documents' passages, text and rows; return what the statistics
        lose: passages, their total length, and each term hash's document frequency."""
        n = total = 0
        lost: Counter[int] = Counter()
        for i in range(0, len(doc_ids), 200):
            chunk = doc_ids[i: i + 200]
            expr = f"doc_id in {json.dumps(chunk, ensure_ascii=False)}"
            keys = []
            fields = ["key", "length", "sparse"]
            rows = self.query(self.P, expr, fields, limit=MAX_LIMIT)  # one pass over the collection
            if len(rows) >= MAX_LIMIT:
                rows = self.query_all(self.P, expr, fields)
            for r in rows:
                keys.append(int(r["key"]))
                n += 1
                total += int(r["length"])
                lost.update(h for h in r["sparse"] if h != EMPTY)
            if keys:  # by primary key: a filter would scan the collection again
                self.call(self.client.delete, self.P, ids=keys)
            self.call(self.client.delete, self.T, filter=expr)
            self.call(self.client.delete, self.D, ids=chunk)
        return n, total, lost

    def recount(self) -> tuple[int, int, dict[int, int]]:
        """Statistics from the passages themselves (after an interrupted run)."""
        n = total = 0
        df: Counter[int] = Counter()
        for r in self.query_all(self.P, ALL, ["length", "sparse"]):
            n += 1
            total += int(r["length"])
            df.update(h for h in r["sparse"] if h != EMPTY)
        return n, total, dict(df)

    def insert_documents(self, batch, vec_of, tokens_of, avgdl: float, k1: float, b: float, stamp: str) -> None:
        """Write documents: their passages (BM25 weighted for ``avgdl``), text, then each
        document's row — its commit. ``batch``: ``(document, stat, passage rows)``."""
        prows, trows, drows = [], [], []
        for doc, st, rows in batch:
            source, date = str(doc.meta.get("source") or ""), str(doc.meta.get("date") or "")
            for r in rows:
                toks = tokens_of[r["id"]]
                sparse = doc_weights(toks, avgdl, k1, b) or {EMPTY: 1e-9}  # Milvus rejects an empty vector
                prows.append({
                    "key": row_key(r["id"]), "id": r["id"], "doc_id": r["doc_id"], "source": source[:250],
                    "date": date[:250], "kind": r["kind"], "parent": r["parent"] or "", "vkey": r["vkey"],
                    "ordinal": r["ordinal"], "start": r["start"], "end": r["end"], "orig_start": r["orig_start"],
                    "orig_end": r["orig_end"], "length": len(toks), "heading_path": _fit(r["heading_path"]),
                    "text": _fit(r["text"]), "dense": np.asarray(vec_of[r["vkey"]], dtype=np.float32).tolist(),
                    "sparse": sparse,
                })
            trows += text_rows(doc.doc_id, doc.doc_id, doc.text)
            drows.append({
                "doc_id": doc.doc_id, "path": _fit(doc.path), "title": _fit(doc.title),
                "meta": _meta_json(doc.meta), "source": source[:250], "date": date[:250],
                "content_hash": doc.content_hash, "encoding": doc.encoding or "", "format": doc.format or "",
                "indexed_at": stamp, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns if st.st_ctime_ns is not None else -1, "n_passages": len(rows),
                "v": [0.0, 0.0],
            })
        for i in range(0, len(prows), WRITE_BATCH):
            self.call(self.client.insert, self.P, prows[i: i + WRITE_BATCH])
        for i in range(0, len(trows), 64):
            self.call(self.client.insert, self.T, trows[i: i + 64])
        self.call(self.client.insert, self.D, drows)  # the documents' commit

    def reweight(self, rows: list[dict], tokens: list[list[str]], avgdl: float, k1: float, b: float) -> None:
        """Upsert passage rows with BM25 weights of their ``tokens`` for ``avgdl``."""
        out = [{**r, "sparse": doc_weights(t, avgdl, k1, b) or {EMPTY: 1e-9}} for r, t in zip(rows, tokens)]
        self.call(self.client.upsert, self.P, out)


def live_manifest(location: str) -> dict | None:
    """The library's manifest (generation, embedder, counts), or ``None`` when there is none yet."""
    try:
        lib = MilvusLibrary(Location.parse(location))
    except IndexNotFound:
        return None
    try:
        return lib.manifest()
    finally:
        lib.close()


def _meta_json(meta: dict) -> str:
    """A document's metadata as stored: JSON that fits a VARCHAR. The locators of a very
    long document (a sheet of many thousand rows) are left out rather than cut."""
    data = json.dumps(meta, ensure_ascii=False)
    if len(data.encode("utf-8")) > 65_535:
        data = json.dumps({k: v for k, v in meta.items() if k != LOCATORS_KEY}, ensure_ascii=False)
    return _fit(data)


def _fit(s: str, limit: int = 65_535) -> str:
    """A VARCHAR holds ``limit`` bytes: cut (at a character) what does not fit."""
    raw = s.encode("utf-8")
    return s if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


