"""`kb index` and `kb compact` into Milvus: the :class:`kb.index.indexer.Indexer`'s scan,
plan and embedding, written per document by :class:`MilvusWriter`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb import __version__
from kb.embed.embedders import same_embedder
from kb.errors import IndexBusy, IndexNotFound, KBError
from kb.index.indexer import Change, Indexer, IndexReport, Writer, _bar, lexical_text
from kb.index.local import load_previous
from kb.records import Passage
from kb.store import bm25
from kb.store.local.layout import IndexDir, PendingVectors, now_iso
from kb.store.milvus import library
from kb.store.milvus.library import (
    ALL,
    BUCKETS,
    DOC_FIELDS,
    FORMAT,
    LEASE_S,
    SHOWN,
    Location,
    MilvusLibrary,
    term_hash,
)
from kb.text.process import tokenize
from kb.text.vocabulary import Vocabulary


@dataclass
class MilvusPrevious:
    """The library as a run finds it (what :meth:`Indexer.scan` and :meth:`Indexer.embed` read)."""

    manifest: dict
    docs: dict[str, dict]
    lib: MilvusLibrary
    legacy: bool = False

    def doc_texts(self) -> Iterator[tuple[str, str]]:
        """``(path, title + text)`` of each document (what its passages' keyword side is made of)."""
        path_of = {d["doc_id"]: rel for rel, d in self.docs.items()}
        titles = {r["doc_id"]: r["title"] for r in self.lib.query_all(self.lib.D, 'doc_id != ""', ["doc_id", "title"])}
        parts: dict[str, list] = {}
        for r in self.lib.query_all(self.lib.T, f"doc_id != {json.dumps(library.MANIFEST_DOC)}",
                                    ["doc_id", "part", "chunk"]):
            parts.setdefault(r["doc_id"], []).append((r["part"], r["chunk"]))
        for doc_id, chunks in parts.items():
            if doc_id in path_of:
                yield path_of[doc_id], (titles.get(doc_id) or "") + "\n" + "".join(c for _, c in sorted(chunks))

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
    prev = load_previous(IndexDir(folder), rebuild=False)
    if prev is None:
        raise IndexNotFound(f"--reuse-vectors: no index at {folder}/")
    return prev if same_embedder(prev.manifest["embedder"], spec) else None


class MilvusWriter(Writer):
    """Runs on a library in Milvus: documents are written one by one (each committed by its
    document row), the manifest is marked ``writing`` first and ``clean`` last; on a server a
    lease in the manifest keeps a second writer out (see :mod:`kb.store.milvus.library`)."""

    def __init__(self, location: str, reuse_vectors: str | Path | None = None) -> None:
        self.loc = Location.parse(location)
        self.location = self.loc.uri
        self.pending_path = self.loc.pending_path
        self.ocr_cache_path = self.loc.ocr_cache_path
        self.reuse_vectors = reuse_vectors
        self.lib: MilvusLibrary | None = None
        self.manifest: dict | None = None
        self.recovering = False

    @contextmanager
    def session(self, run: Indexer) -> Iterator[MilvusPrevious | None]:
        lib = self.lib = MilvusLibrary(self.loc, create=True)
        try:
            manifest = self.manifest = lib.manifest()
            if manifest is not None and manifest.get("format") != FORMAT:
                raise KBError(f"{self.loc} holds a kb library of format {manifest.get('format')}; this kb writes "
                              f"format {FORMAT} — rebuild it with --rebuild")
            self.recovering = manifest is not None and manifest.get("state") == "writing"
            if self.recovering:
                beat = float(manifest.get("heartbeat") or 0)
                if not self.loc.lite and time.time() - beat < LEASE_S:  # a Lite .db has one process anyway
                    raise IndexBusy(f"another `kb index` is writing {self.loc} (last heard from "
                                    f"{time.time() - beat:.0f} s ago) — wait for it to finish")
                run.warn("the previous run was interrupted; recounting the statistics and completing it")
                n, total, df = lib.recount()
                manifest.update(passages=n, total_length=total)
                lib.write_frequencies(df)
                lib.write_manifest(manifest)
            yield None if manifest is None else MilvusPrevious(manifest, {d["path"]: d for d in lib.files()}, lib)
        finally:
            lib.close()

    def unchanged(self, prev: MilvusPrevious, report: IndexReport) -> None:
        report.passages = int(prev.manifest.get("passages", 0))
        report.generation = str(prev.manifest.get("generation"))

    def model_changed(self, prev: MilvusPrevious, spec: dict) -> bool:
        return not same_embedder(prev.manifest["embedder"], spec)

    def start_over(self, prev: MilvusPrevious) -> None:
        self.lib.drop()
        self.manifest = None
        return None

    def vector_source(self, prev: MilvusPrevious | None, spec: dict, run: Indexer) -> VectorSources | None:
        sources: list = [prev] if prev is not None else []
        if self.reuse_vectors:
            local = _local_source(self.reuse_vectors, spec)
            if local is None:
                run.warn(f"--reuse-vectors: {self.reuse_vectors}/ was built with another model; not reused")
            else:
                sources.append(local)
        return VectorSources({"embedder": spec}, sources) if sources else None

    def apply(self, change: Change, run: Indexer) -> None:
        opt, report, lib, manifest = run.options, run.report, self.lib, self.manifest
        plan, prev, new_rows, vec_of = change.plan, change.prev, change.new_rows, change.vec_of
        spec = run._spec()
        if manifest is None:
            if not lib.exists():
                lib.create(int(spec["dim"]))
            manifest = {"format": FORMAT, "generation": 0, "passages": 0, "total_length": 0,
                        "embedder": spec}
        k1, b = (manifest.get("bm25") or {}).get("k1", bm25.K1), (manifest.get("bm25") or {}).get("b", bm25.B)
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
        if self.recovering:  # an interrupted run may have left passages of documents it was adding
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
            if pending >= library.WRITE_BATCH or i == len(plan.new_docs):
                lib.insert_documents(batch, vec_of, tokens_of, avgdl, k1, b, stamp)
                batch, pending = [], 0
                if time.time() - manifest["heartbeat"] > LEASE_S / 4:  # still writing: keep the lease
                    manifest["heartbeat"] = time.time()
                    lib.write_manifest(manifest)
            if bar is not None:
                bar.update(1)
            if run.on_progress:
                run.on_progress("writing", i, len(plan.new_docs))
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
                        total_length=total, documents=report.documents, created=stamp, corpus=str(change.corpus),
                        pipeline=run.pipeline(), scan_started_ns=change.scan_started_ns,
                        kb_version=__version__, avgdl_written=avgdl)
        lib.write_manifest(manifest)
        lib.flush()
        PendingVectors.remove(self.pending_path)
        report.updated = True
        report.generation, report.passages = str(manifest["generation"]), n


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
        tokenizer = Vocabulary.of_manifest(manifest).tokenizer()
        bar = _bar(progress, n, "re-weighting")
        batch: list[dict] = []
        fields = list(SHOWN) + ["source", "date", "vkey", "length", "dense"]
        for r in lib.query_all(lib.P, ALL, fields):
            batch.append(r)
            if len(batch) >= library.WRITE_BATCH:
                _reweight(lib, batch, avgdl, k1, b, tokenizer)
                if bar is not None:
                    bar.update(len(batch))
                batch = []
        if batch:
            _reweight(lib, batch, avgdl, k1, b, tokenizer)
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


def _reweight(lib: MilvusLibrary, rows: list[dict], avgdl: float, k1: float, b: float, tokenizer=None) -> None:
    """Upsert rows with BM25 weights for ``avgdl`` (tokens recomputed from the text, as
    `kb index` tokenises it, with the library's own words)."""
    tokens = []
    for r in rows:
        p = Passage(id=r["id"], doc_id=r["doc_id"], kind=r["kind"], heading_path=json.loads(r["heading_path"]),
                    text=r["text"], start=r["start"], end=r["end"], orig_start=r["orig_start"],
                    orig_end=r["orig_end"], parent=r["parent"] or None, ordinal=r["ordinal"])
        tokens.append(tokenize(lexical_text(p), tokenizer=tokenizer))
    lib.reweight(rows, tokens, avgdl, k1, b)
