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
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb import __version__
from kb.embed.embedders import Embedder, check_model, mismatch, same_embedder
from kb.errors import IndexBusy, IndexMismatch, IndexNotFound, KBError
from kb.index.indexer import Indexer, IndexOptions, IndexReport, PendingVectors, _bar
from kb.rank.fusion import RankingConfig
from kb.search.searcher import Searcher
from kb.store.local import postings as bm25
from kb.store.local.layout import now_iso
from kb.store.local.segments import SAMPLE_SIZE, id_hash

EXTRA = "pip install 'kb[milvus]'"
FORMAT = 1
BUCKETS = 256
META = -1  # the manifest's row in kb_stats
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


def is_milvus(location: Any) -> bool:
    """A ``.db`` path (Milvus Lite) or an ``http(s)://`` URI (a Milvus server)."""
    s = str(location)
    return s.endswith(".db") or s.startswith(("http://", "https://"))


def term_hash(term: str) -> int:
    """A term's dimension in the sparse vectors (32 bits; 0xFFFFFFFF is not a valid index)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little") % 0xFFFFFFFF


def row_key(passage_id: str) -> int:
    """The passage's primary key: its 64-bit id hash shifted into INT64, order kept (the
    dense calibration sample is the smallest keys, as the local store's smallest hashes)."""
    return id_hash(passage_id) - (1 << 63)


def doc_weights(tokens: list[str], avgdl: float, k1: float, b: float) -> dict[int, float]:
    """The document side of BM25 for one passage (the same float32 expression as
    :func:`kb.store.local.postings.weights`, without the IDF)."""
    counts: Counter[int] = Counter(term_hash(t) for t in tokens)
    if not counts:
        return {}
    keys = list(counts)
    tf = np.asarray([counts[k] for k in keys], dtype=np.float32)
    length = np.float32(len(tokens))
    norm = np.float32(k1) * (np.float32(1.0 - b) + np.float32(b) * length / np.float32(avgdl))
    w = tf * np.float32(k1 + 1.0) / (tf + norm)
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
        rows = self.query(self.S, f"bucket == {META}", ["meta"])
        return json.loads(rows[0]["meta"]) if rows else None

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
        self.call(self.client.upsert, self.S, [{"bucket": META, "meta": json.dumps(manifest, ensure_ascii=False),
                                                "df": {0: 1.0}}])

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


# ---------------------------------------------------------------------------- indexing
class _Where:
    """What :class:`Indexer` reads of an index folder, for a Milvus location."""

    def __init__(self, loc: Location) -> None:
        self.root = loc.uri


@dataclass
class MilvusPrevious:
    """The library as a run finds it (what :meth:`Indexer.scan` and :meth:`Indexer.embed` read)."""

    manifest: dict
    docs: dict[str, dict]
    lib: MilvusLibrary
    legacy: bool = False

    def vectors_for(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for r in self.lib.query_in(self.lib.P, "vkey", list(keys), ["vkey", "dense"]):
            out[r["vkey"]] = np.asarray(r["dense"], dtype=np.float32)
        return out


@dataclass
class VectorSources:
    """Where a run looks for vectors before embedding: the library itself, then a local
    index (``--reuse-vectors``: moving a library to Milvus costs no embedding)."""

    manifest: dict
    sources: list

    def vectors_for(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for src in self.sources:
            want = [k for k in keys if k not in out]
            if not want:
                break
            out.update(src.vectors_for(want))
        return out


def _local_source(folder: str | Path, spec: dict):
    from kb.index.indexer import load_previous
    from kb.store.local.layout import IndexDir

    prev = load_previous(IndexDir(folder), rebuild=False)
    if prev is None:
        raise IndexNotFound(f"--reuse-vectors: no index at {folder}/")
    return prev if same_embedder(prev.manifest["embedder"], spec) else None


class MilvusIndexer(Indexer):
    """`kb index --store x.db|http://…`: the same scan, plan and embedding as the local
    store; writing is per document into Milvus (see the module's docstring)."""

    def __init__(self, location: str, options: IndexOptions, embedder: Embedder | None = None, warn=None,
                 on_progress=None, reuse_vectors: str | Path | None = None) -> None:
        self.loc = Location.parse(location)
        self.reuse_vectors = reuse_vectors
        kw = {"warn": warn} if warn is not None else {}
        super().__init__(_Where(self.loc), options, embedder=embedder, on_progress=on_progress, **kw)

    @property
    def pending_path(self) -> Path:
        return self.loc.pending_path

    @property
    def ocr_cache_path(self) -> Path:
        return self.loc.ocr_cache_path

    def run(self, corpus) -> IndexReport:
        t0 = time.time()
        lib = MilvusLibrary(self.loc, create=True)
        try:
            self._write(lib, corpus)
        finally:
            lib.close()
        self.report.seconds = time.time() - t0
        return self.report

    def _write(self, lib: MilvusLibrary, corpus) -> None:
        opt, report = self.options, self.report
        manifest = lib.manifest()
        if manifest is not None and manifest.get("format") != FORMAT:
            raise KBError(f"{self.loc} holds a kb library of format {manifest.get('format')}; this kb writes "
                          f"format {FORMAT} — rebuild it with --rebuild")
        recovering = manifest is not None and manifest.get("state") == "writing"
        if recovering:
            beat = float(manifest.get("heartbeat") or 0)
            if not self.loc.lite and time.time() - beat < LEASE_S:  # a Lite .db has one process anyway
                raise IndexBusy(f"another `kb index` is writing {self.loc} (last heard from "
                                f"{time.time() - beat:.0f} s ago) — wait for it to finish")
            self.warn("the previous run was interrupted; recounting the statistics and completing it")
            n, total, df = lib.recount()
            manifest.update(passages=n, total_length=total)
            lib.write_frequencies(df)
            lib.write_manifest(manifest)
        prev = None
        if manifest is not None:
            prev = MilvusPrevious(manifest, {d["path"]: d for d in lib.files()}, lib)
        corpus = self.start(corpus, prev)
        scan_started_ns = time.time_ns()
        full = self.pipeline_changed(prev)
        plan = self.scan(corpus, prev, full, scan_started_ns)
        if prev is not None and not full and not plan.new_docs and not plan.removed and not plan.refreshed:
            report.passages = int(prev.manifest.get("passages", 0))
            report.generation = str(prev.manifest.get("generation"))
            return
        spec = self._spec()
        if prev is not None and not same_embedder(prev.manifest["embedder"], spec):
            self._drop_unreadable_kept(plan)  # --rebuild with another model: start over
            lib.drop()
            manifest, prev = None, None
        sources = [prev] if prev is not None else []
        if self.reuse_vectors:
            local = _local_source(self.reuse_vectors, spec)
            if local is None:
                self.warn(f"--reuse-vectors: {self.reuse_vectors}/ was built with another model; not reused")
            else:
                sources.append(local)
        new_rows, vec_of = self.embed(plan, VectorSources({"embedder": spec}, sources) if sources else None)
        if manifest is None:
            if not lib.exists():
                lib.create(int(spec["dim"]))
            manifest = {"format": FORMAT, "generation": 0, "passages": 0, "total_length": 0,
                        "embedder": spec}
        cfg = RankingConfig()
        k1, b = (manifest.get("bm25") or {}).get("k1", cfg.bm25_k1), (manifest.get("bm25") or {}).get("b", cfg.bm25_b)
        stamp = now_iso()
        manifest.update(state="writing", bm25={"k1": k1, "b": b}, heartbeat=time.time())
        lib.write_manifest(manifest)
        df = lib.document_frequencies()
        touched: set[int] = set()
        n, total = int(manifest["passages"]), int(manifest["total_length"])

        # documents removed, replaced or (re)written go first — passages, text, then the row —
        # with whatever an interrupted run left of them
        victims = [prev.docs[rel]["doc_id"] for rel in plan.removed] if prev else []
        victims += [prev.docs[doc.path]["doc_id"] for doc, _ in plan.new_docs if prev and doc.path in prev.docs]
        if recovering:  # an interrupted run may have left passages of documents it was adding
            victims += [doc.doc_id for doc, _ in plan.new_docs]
        victims = list(dict.fromkeys(victims))
        if victims:
            gone_n, gone_len, lost = lib.delete_docs(victims)
            n, total = n - gone_n, total - gone_len
            for h, c in lost.items():
                df[h] = df.get(h, 0) - c
                touched.add(h % BUCKETS)
        tokens_of = {r["id"]: [t for t in r["tokens"].split(" ") if t] for rows in new_rows.values() for r in rows}
        n += len(tokens_of)
        total += sum(len(t) for t in tokens_of.values())
        avgdl = total / n if n else 1.0
        bar = _bar(opt.progress and len(plan.new_docs) > 20, len(plan.new_docs), "writing")
        batch: list[tuple] = []
        pending = 0
        for i, (doc, st) in enumerate(sorted(plan.new_docs, key=lambda x: x[0].path), 1):
            rows = new_rows[doc.doc_id]
            batch.append((doc, st, rows))
            pending += len(rows)
            for r in rows:
                for h in {term_hash(t) for t in tokens_of[r["id"]]}:
                    df[h] = df.get(h, 0) + 1
                    touched.add(h % BUCKETS)
            if pending >= WRITE_BATCH or i == len(plan.new_docs):
                self._insert(lib, batch, vec_of, tokens_of, avgdl, k1, b, stamp)
                batch, pending = [], 0
                if time.time() - manifest["heartbeat"] > LEASE_S / 4:  # still writing: keep the lease
                    manifest["heartbeat"] = time.time()
                    lib.write_manifest(manifest)
            if bar is not None:
                bar.update(1)
            if self.on_progress:
                self.on_progress("writing", i, len(plan.new_docs))
        if bar is not None:
            bar.close()
        for rel, stat in plan.refreshed.items():
            d = prev.docs[rel]
            row = lib.query(lib.D, f"doc_id == {json.dumps(d['doc_id'])}", list(DOC_FIELDS) + ["source", "date", "v"])
            if row:
                row[0].update(size=stat[0], mtime_ns=stat[1], ctime_ns=stat[2])
                lib.call(lib.client.upsert, lib.D, [row[0]])
        lib.write_frequencies(df, touched)
        manifest.update(state="clean", generation=int(manifest.get("generation", 0)) + 1, passages=n,
                        total_length=total, documents=report.documents, created=stamp, corpus=str(corpus),
                        pipeline=self.pipeline(), scan_started_ns=scan_started_ns,
                        kb_version=__version__, avgdl_written=avgdl)
        lib.write_manifest(manifest)
        lib.flush()
        PendingVectors.remove(self.pending_path)
        report.updated = True
        report.generation, report.passages = str(manifest["generation"]), n

    def _insert(self, lib: MilvusLibrary, batch, vec_of, tokens_of, avgdl, k1, b, stamp) -> None:
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
            for part, start in enumerate(range(0, max(len(doc.text), 1), TEXT_CHUNK)):
                trows.append({"key": f"{doc.doc_id}#{part}", "doc_id": doc.doc_id, "part": part,
                              "chunk": doc.text[start: start + TEXT_CHUNK], "v": [0.0, 0.0]})
            drows.append({
                "doc_id": doc.doc_id, "path": _fit(doc.path), "title": _fit(doc.title),
                "meta": _meta_json(doc.meta), "source": source[:250], "date": date[:250],
                "content_hash": doc.content_hash, "encoding": doc.encoding or "", "format": doc.format or "",
                "indexed_at": stamp, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns if st.st_ctime_ns is not None else -1, "n_passages": len(rows),
                "v": [0.0, 0.0],
            })
        for i in range(0, len(prows), WRITE_BATCH):
            lib.call(lib.client.insert, lib.P, prows[i: i + WRITE_BATCH])
        for i in range(0, len(trows), 64):
            lib.call(lib.client.insert, lib.T, trows[i: i + 64])
        lib.call(lib.client.insert, lib.D, drows)  # the documents' commit


def _meta_json(meta: dict) -> str:
    """A document's metadata as stored: JSON that fits a VARCHAR. The locators of a very
    long document (a sheet of many thousand rows) are left out rather than cut."""
    data = json.dumps(meta, ensure_ascii=False)
    if len(data.encode("utf-8")) > 65_535:
        from kb.read.locators import KEY

        data = json.dumps({k: v for k, v in meta.items() if k != KEY}, ensure_ascii=False)
    return _fit(data)


def _fit(s: str, limit: int = 65_535) -> str:
    """A VARCHAR holds ``limit`` bytes: cut (at a character) what does not fit."""
    raw = s.encode("utf-8")
    return s if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def compact_milvus(location: str, progress: bool = False) -> IndexReport:
    """Re-weight every passage's BM25 vector with today's average length (the drift
    between writes goes to zero)."""
    t0 = time.time()
    report = IndexReport()
    lib = MilvusLibrary(Location.parse(location))
    try:
        manifest = lib.manifest()
        if manifest is None:
            raise IndexNotFound(f"no index at {location} — run `kb index FOLDER --store {location}` first")
        n, total = int(manifest["passages"]), int(manifest["total_length"])
        k1, b = manifest["bm25"]["k1"], manifest["bm25"]["b"]
        avgdl = total / n if n else 1.0
        bar = _bar(progress, n, "re-weighting")
        batch: list[dict] = []
        fields = list(SHOWN) + ["source", "date", "vkey", "length", "dense"]
        for r in lib.query_all(lib.P, ALL, fields):
            batch.append(r)
            if len(batch) >= WRITE_BATCH:
                _reweight(lib, batch, avgdl, k1, b)
                if bar is not None:
                    bar.update(len(batch))
                batch = []
        if batch:
            _reweight(lib, batch, avgdl, k1, b)
        if bar is not None:
            bar.close()
        manifest.update(avgdl_written=avgdl, generation=int(manifest["generation"]) + 1)
        lib.write_manifest(manifest)
        lib.flush()
        report.updated, report.passages = True, n
        report.documents, report.generation = int(manifest.get("documents") or 0), str(manifest["generation"])
    finally:
        lib.close()
    report.seconds = time.time() - t0
    return report


def _reweight(lib: MilvusLibrary, rows: list[dict], avgdl: float, k1: float, b: float) -> None:
    """Upsert rows with BM25 weights for ``avgdl`` (tokens recomputed from the text, as
    `kb index` tokenises it)."""
    from kb.index.indexer import lexical_text
    from kb.records import Passage
    from kb.text.process import tokenize

    out = []
    for r in rows:
        heading = json.loads(r["heading_path"])
        p = Passage(id=r["id"], doc_id=r["doc_id"], kind=r["kind"], heading_path=heading, text=r["text"],
                    start=r["start"], end=r["end"], orig_start=r["orig_start"], orig_end=r["orig_end"],
                    parent=r["parent"] or None, ordinal=r["ordinal"])
        toks = tokenize(lexical_text(p))
        out.append({**r, "sparse": doc_weights(toks, avgdl, k1, b) or {EMPTY: 1e-9}})
    lib.call(lib.client.upsert, lib.P, out)


# ---------------------------------------------------------------------------- searching
class _DocStore:
    """A document's passages (what :class:`kb.store.local.segments.PassageStore` gives the views)."""

    def __init__(self, view: MilvusView) -> None:
        self.view = view
        self.lib = view.lib

    def _rows(self, expr: str, fields: list[str]) -> list[dict]:
        rows = self.lib.query(self.lib.P, expr, fields, limit=MAX_LIMIT)
        for r in rows:
            if "parent" in r:
                r["parent"] = r["parent"] or None
        return sorted(rows, key=lambda r: r.get("ordinal", 0))

    def passages_of(self, doc_id: str, columns: str = "*") -> list[dict]:
        fields = [c.strip().strip('"') for c in columns.split(",")] if columns != "*" else list(SHOWN[1:])
        rows = self._rows(f"doc_id == {json.dumps(doc_id)}", list(dict.fromkeys(fields + ["ordinal"])))
        return [{k: r[k] for k in fields} for r in rows]

    def level(self, doc_id: str, parent: str | None) -> list[dict]:
        fields = ["id", "kind", "text", "heading_path", "start", "end", "ordinal"]
        return self._rows(f"doc_id == {json.dumps(doc_id)} and parent == {json.dumps(parent or '')}", fields)

    def children(self, passage_id: str) -> list[dict]:
        rows = self._rows(f"parent == {json.dumps(passage_id)}", ["id", "kind", "text", "heading_path", "ordinal"])
        return [{k: r[k] for k in ("id", "kind", "text", "heading_path")} for r in rows]

    def descendants(self, passage_id: str) -> set[str]:
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


class MilvusView:
    """What ranking reads of a library (:class:`kb.store.local.segments.GenerationView`'s interface):
    rows are the passages' INT64 keys. Every call to Milvus is a round trip (tens of ms on
    Milvus Lite), so both searches return the candidates' rows with their vectors, and rows
    are kept (a generation's rows do not change) for the views that follow."""

    def __init__(self, lib: MilvusLibrary, manifest: dict, cache_rows: int = 20_000) -> None:
        self.lib = lib
        self.manifest = manifest
        self.docs = lib.documents()
        self.doc_by_id = {d["doc_id"]: d for d in self.docs}
        self.df = lib.document_frequencies()
        self.n_live = int(manifest["passages"])
        self.dim = int(manifest["embedder"]["dim"])
        self._sample: np.ndarray | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, dict | None] = OrderedDict()  # key -> row (None: no such row)
        self._last_top: OrderedDict[tuple, dict[int, float]] = OrderedDict()  # query terms -> BM25 top scores
        self._cache_rows = cache_rows
        self.lite = lib.loc.lite

    # ------------------------------------------------------------------ statistics
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

    def store_of(self, doc_id: str) -> _DocStore:
        return _DocStore(self)

    def vectors(self, rows) -> np.ndarray:
        keys = [int(r) for r in rows]
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        got = self._get(list(dict.fromkeys(keys)), ("dense",))
        for i, k in enumerate(keys):
            if k in got:
                out[i] = np.asarray(got[k]["dense"], dtype=np.float32)
        return out

    def row_mask(self, allowed_docs: set[str]) -> str:
        """A filter: the passages of these documents."""
        return f"doc_id in {json.dumps(sorted(allowed_docs), ensure_ascii=False)}"

    # ------------------------------------------------------------------ channels
    def _search(self, field: str, data, k: int, filt: str | None, params: dict) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, MAX_LIMIT)
        if k <= 0 or self.n_live == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        want = k
        while True:
            kw = {"filter": filt} if filt else {}
            res = self.lib.call(self.lib.client.search, self.lib.P, data=[data], anns_field=field, limit=want,
                                output_fields=list(SHOWN), search_params={"metric_type": "IP", "params": params},
                                **kw)[0]
            hits = [h for h in res if h["entity"]["doc_id"] in self.doc_by_id]
            # a filtered HNSW search (or uncommitted rows) may give fewer than asked: ask for more
            if len(hits) >= k or len(res) < want or want >= MAX_LIMIT:
                break
            want = min(MAX_LIMIT, want * 4)
        hits = hits[:k]
        entities = []
        for h in hits:
            e = dict(h["entity"])
            e["key"] = int(h["key"] if "key" in h else h["id"])
            entities.append(e)
        self._keep(entities)
        rows = np.asarray([e["key"] for e in entities], dtype=np.int64)
        scores = np.asarray([float(h["distance"]) for h in hits], dtype=np.float32)
        order = np.lexsort((rows, -scores))
        return rows[order], scores[order]

    def dense(self, qvec: np.ndarray, k: int, masks: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        params = {} if self.lite else {"ef": max(64, 2 * k)}
        return self._search("dense", np.asarray(qvec, dtype=np.float32).tolist(), k, masks, params)

    def _query_sparse(self, tokens) -> dict[int, float]:
        q: dict[int, float] = {}
        for t in dict.fromkeys(tokens):
            h = term_hash(t)
            df = self.df.get(h, 0)
            if df > 0:
                q[h] = q.get(h, 0.0) + self._idf(df)
        return q

    def bm25_top(self, tokens, k1: float, b: float, k: int, masks: str | None = None):
        """The ``k`` best BM25 rows. ``k1`` and ``b`` are those the library was written
        with (the manifest's ``bm25``): the document side is stored weighted."""
        q = self._query_sparse(tokens)
        if not q:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows, scores = self._search("sparse", q, k, masks, {})
        with self._lock:
            self._last_top[tuple(sorted(q))] = dict(zip(rows.tolist(), scores.tolist()))
            while len(self._last_top) > 16:
                self._last_top.popitem(last=False)
        return rows, scores

    def bm25_of(self, tokens, k1: float, b: float, rows) -> dict[int, float]:
        """BM25 of these rows: what the sparse search scored, and for the others the inner
        product of the query's IDF weights with the row's stored weights."""
        q = self._query_sparse(tokens)
        keys = [int(r) for r in rows]
        if not q or not keys:
            return {k: 0.0 for k in keys}
        with self._lock:
            known = dict(self._last_top.get(tuple(sorted(q))) or {})
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


class MilvusSearcher(Searcher):
    """A :class:`Searcher` over a library in Milvus: ranking, views and citations are the
    local store's; only the rows come from elsewhere."""

    def __init__(self, loc: Location, lib: MilvusLibrary, manifest: dict, embedder: Embedder | None = None,
                 device: str | None = None) -> None:
        self.loc, self.lib = loc, lib
        super().__init__(loc.uri, None, manifest, embedder=embedder, device=device)

    def _open_view(self) -> MilvusView:
        return MilvusView(self.lib, self.manifest)

    @classmethod
    def open(cls, location: str, model: str | None = None, embedder: Embedder | None = None,
             device: str | None = None) -> MilvusSearcher:
        loc = Location.parse(location)
        lib = MilvusLibrary(loc)
        try:
            manifest = lib.manifest()
            if manifest is None:
                raise IndexNotFound(f"no kb library in {loc} (collections {loc.prefix}_*) — "
                                    f"run `kb index FOLDER --store {location}` first")
            if manifest.get("format") != FORMAT:
                raise IndexMismatch(f"{loc} holds a kb library of format {manifest.get('format')}, this kb reads "
                                    f"format {FORMAT} — rebuild it with `kb index FOLDER --store {location} --rebuild`")
            check_model(model, manifest["embedder"], loc)
            if embedder is not None and not same_embedder(embedder.spec(), manifest["embedder"]):
                raise mismatch(loc, manifest["embedder"], embedder.describe(), "rebuild the index with that model")
            cfg = manifest.get("bm25") or {}
            searcher = cls(loc, lib, manifest, embedder=embedder, device=device)
            if cfg:  # the document side was weighted with these
                from dataclasses import replace

                searcher.config = replace(searcher.config, bm25_k1=cfg["k1"], bm25_b=cfg["b"])
            return searcher
        except BaseException:
            lib.close()
            raise

    @property
    def version(self) -> str:
        return str(self.manifest.get("generation"))

    def is_stale(self) -> bool:
        m = self.lib.manifest()
        return m is None or m.get("generation") != self.manifest.get("generation")

    def stats(self) -> dict[str, Any]:
        kinds: Counter[str] = Counter()
        for r in self.lib.query_all(self.lib.P, ALL, ["kind", "doc_id"]):
            if r["doc_id"] in self.doc_by_id:
                kinds[r["kind"]] += 1
        sources: Counter[str] = Counter(d["meta"].get("source") for d in self.docs if d["meta"].get("source"))
        size = None
        if self.loc.lite:
            size = sum(f.stat().st_size for f in Path(self.loc.uri).rglob("*") if f.is_file())
        m = self.manifest
        return {
            "index": self.loc.uri, "store": "milvus-lite" if self.loc.lite else "milvus",
            "collections": [self.lib.P, self.lib.D, self.lib.T, self.lib.S],
            "generation": self.version, "created": m.get("created"), "corpus": m.get("corpus"),
            "documents": len(self.docs), "passages": self.count, "passage_kinds": dict(kinds),
            "embedder": self.spec, "vector_index": "milvus " + ("FLAT" if self.loc.lite else "HNSW"),
            "segments": [], "vocabulary": len(self.view.df), "size_bytes": size, "sources": dict(sources),
            "format_version": m.get("format"), "kb_version": m.get("kb_version"),
            "bm25_average_length": {"written": m.get("avgdl_written"),
                                    "now": m["total_length"] / m["passages"] if m.get("passages") else None},
        }

    def close(self) -> None:
        self.lib.close()
