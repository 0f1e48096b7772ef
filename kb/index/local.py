"""`kb index` into a local index folder: what changed is written as one new segment, the
documents it replaces or that were removed are marked deleted in their old segments, and the
new generation replaces the old one atomically (:mod:`kb.store.local.layout`). A merge policy
keeps the number of segments and the share of deleted rows bounded (:func:`plan_merge`,
`kb compact`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import IndexNotFound, KBError, OldFormat
from kb.index.indexer import Change, Indexer, IndexReport, Plan, Writer
from kb.store.local.layout import (
    IndexDir,
    PendingVectors,
    _reason,
    damaged,
    file_checksum,
    now_iso,
    read_manifest,
    save_array,
    write_manifest,
)
from kb.store.local.segments import SegmentReader, SegmentWriter, load_deleted, open_segment


@contextmanager
def _after_publish(run: Indexer, generation: str, step: str, then: str = "the next run retries") -> Iterator[None]:
    try:
        yield
    except (OSError, sqlite3.Error, KBError) as e:
        run.warn(f"the update is live ({generation}), but {step} failed ({_reason(e)}); {then}")


class LocalWriter(Writer):
    """Runs on an index folder: under its writer lock, from its live generation."""

    def __init__(self, idx: IndexDir) -> None:
        self.idx = idx
        self.location = str(idx.root)
        self.pending_path = idx.root / "pending.sqlite"
        self.ocr_cache_path = idx.root / "ocr-cache.sqlite"

    @contextmanager
    def session(self, run: Indexer) -> Iterator[Previous | None]:
        with self.idx.writer_lock():
            try:
                self.idx.clean(keep_previous=None)
                yield load_previous(self.idx, run.options.rebuild)
            except (OSError, sqlite3.Error) as e:
                raise KBError(f"cannot write the index at {self.idx.root}/ ({_reason(e)})") from e

    def recorded_embedder(self) -> dict | None:
        return self.idx.recorded_embedder()

    def unchanged(self, prev: Previous, report: IndexReport) -> None:
        report.passages = int(prev.manifest.get("passages", 0))
        report.generation = prev.gen.name
        report.segments = len(prev.manifest["segments"])

    def apply(self, change: Change, run: Indexer) -> None:
        opt, idx, report = run.options, self.idx, run.report
        plan, prev, rewrite = change.plan, change.prev, change.rewrite
        stamp = now_iso()
        writer = None
        entry = None
        if plan.new_docs or (rewrite and plan.carried):
            writer = SegmentWriter(idx.next_segment(), int(run._spec()["dim"]), run._spec())
            try:
                self.write(writer, plan, change.new_rows, change.vec_of, prev if rewrite else None, stamp)
                entry = writer.finish(opt.vector_kind, created=stamp)
            except BaseException:
                writer.abandon()
                raise
        base = {"created": stamp, "corpus": str(change.corpus), "embedder": run._spec(),
                "pipeline": run.pipeline(), "scan_started_ns": change.scan_started_ns}
        if rewrite:
            entries = [entry] if entry else []
            final = publish_generation(idx, base, entries, {}, {}, {})
        else:
            final = self.publish_incremental(prev, base, plan, entry)
        report.updated = True
        m = read_manifest(final)
        report.generation, report.passages = final.name, int(m["passages"])
        report.segments = len(m["segments"])
        # The update is live: what follows only tidies up, and a failure of it (a full disk) is
        # a warning — exit status 0 says "published", whatever happens next.
        with _after_publish(run, final.name, "clearing the previous run's files"):
            PendingVectors.remove(self.pending_path)
            idx.clean(keep_previous=prev.gen if prev else None)
        if opt.merge and not rewrite:
            groups = plan_merge(m["segments"])
            if groups:
                with _after_publish(run, final.name, "merging segments", "`kb compact` merges them later"):
                    current = load_previous(idx, rebuild=False, only=set(groups[0]))
                    report.merge = merge_segments(idx, current, groups[0], "auto" if opt.vector_kind == "auto"
                                                  else opt.vector_kind)
                    final = idx.require_current()
                    report.generation, report.segments = final.name, len(read_manifest(final)["segments"])

    def write(self, writer: SegmentWriter, plan: Plan, new_rows, vec_of, source: Previous | None,
              stamp: str) -> None:
        """The new segment: new and changed documents, and (when ``source`` is given: a
        rewrite) every carried document copied from its old segment, in path order."""
        new_by_path = {doc.path: (doc, st) for doc, st in plan.new_docs}
        order = sorted(set(new_by_path) | (set(plan.carried) if source is not None else set()))
        for rel in order:
            if rel in new_by_path:
                doc, st = new_by_path[rel]
                rows = new_rows[doc.doc_id]
                doc_row = {
                    "doc_id": doc.doc_id, "path": doc.path, "title": doc.title,
                    "meta": json.dumps(doc.meta, ensure_ascii=False), "text": doc.text,
                    "offsets": json.dumps(doc.offsets.to_json()), "content_hash": doc.content_hash,
                    "encoding": doc.encoding, "format": doc.format, "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "n_passages": len(rows),
                    "indexed_at": stamp,
                }
                writer.add(doc_row, rows, np.asarray([vec_of[r["vkey"]] for r in rows], dtype=np.float32))
            else:
                d = plan.carried[rel]
                copy_document(writer, source.segments[d["seg"]], d)

    def publish_incremental(self, prev: Previous, base: dict, plan: Plan, entry: dict | None) -> Path:
        deleted = {e["name"]: set(dead) for e, dead in zip(prev.manifest["segments"], prev.deleted)}
        names = [e["name"] for e in prev.manifest["segments"]]
        for rel in plan.removed + [doc.path for doc, _ in plan.new_docs if doc.path in prev.docs]:
            d = prev.docs[rel]
            deleted[names[d["seg"]]].add(d["doc_idx"])
        refreshed = {k: v for k, v in (prev.manifest.get("refreshed") or {}).items()
                     if k in plan.carried}
        refreshed.update(plan.refreshed)
        entries = [dict(e) for e in prev.manifest["segments"]] + ([entry] if entry else [])
        segs = {seg.name: seg for seg in prev.segments}
        return publish_generation(idx=self.idx, base=base, entries=entries, deleted=deleted, refreshed=refreshed,
                                  segments=segs)


@dataclass
class Previous:
    """The live generation a run starts from: its segments, deletions and documents."""

    gen: Path
    manifest: dict
    legacy: bool  # format 1: one monolithic generation, migrated by this run
    segments: list[SegmentReader]
    deleted: list[set[int]]
    docs: dict[str, dict]  # path -> document row (with "seg"), stat refreshes applied

    def doc_texts(self) -> Iterator[tuple[str, str]]:
        """``(path, title + text)`` of each document (what its passages' keyword side is made of)."""
        live = {(d["seg"], d["doc_id"]): rel for rel, d in self.docs.items()}
        for s, seg in enumerate(self.segments):
            for doc_id, text in seg.store.titles_and_texts():
                if (s, doc_id) in live:
                    yield live[(s, doc_id)], text

    def vectors_for(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Vectors of these vector keys held by any segment (deleted documents included:
        a vector depends only on the model and the text)."""
        out: dict[str, np.ndarray] = {}
        for seg in reversed(self.segments):
            want = [k for k in keys if k not in out]
            if not want:
                break
            try:
                seg.verify()
            except KBError:
                continue  # a damaged segment's vectors are not trusted: embedded again
            found = seg.store.rows_for_vkeys(want)
            if found:
                vecs = seg.vectors.vectors(list(found.values()))
                out.update(zip(found, vecs))
        return out


def load_previous(idx: IndexDir, rebuild: bool, only: set[str] | None = None) -> Previous | None:
    """The live generation, or ``None`` when there is none (or, with ``rebuild``, when
    it cannot be read: ``--rebuild`` works on a damaged index or any format). With
    ``only``, documents are read from those segments alone (what a merge needs)."""
    try:
        gen = idx.current()
        if gen is None:
            return None
        manifest = read_manifest(gen, legacy_ok=True)
        legacy = manifest.get("format_version") == 1
        if legacy:
            segments = [SegmentReader(gen, legacy=True)]
            deleted: list[set[int]] = [set()]
        else:
            segments, deleted = [], []
            for e in manifest["segments"]:
                segments.append(open_segment(idx.segments_dir / e["name"]))
                deleted.append(set(load_deleted(gen, e).tolist()))
        refreshed = manifest.get("refreshed") or {}
        docs: dict[str, dict] = {}
        for s, (seg, dead) in enumerate(zip(segments, deleted)):
            if only is not None and seg.name not in only:
                continue
            for d in seg.store.files():
                if d["doc_idx"] in dead:
                    continue
                d["seg"] = s
                if d["path"] in refreshed:
                    d["size"], d["mtime_ns"], d["ctime_ns"] = refreshed[d["path"]]
                docs[d["path"]] = d
        return Previous(gen, manifest, legacy, segments, deleted, docs)
    except KBError:
        if rebuild:
            return None
        raise
    except (OSError, sqlite3.Error, ValueError, KeyError, TypeError) as e:
        if rebuild:
            return None
        raise damaged(idx.root, e) from e


def copy_document(writer: SegmentWriter, seg: SegmentReader, d: dict, vectors: np.ndarray | None = None) -> None:
    """Copy one document (rows, tokens, vectors) from a segment into a new one."""
    doc_row = seg.store.document_row(d["doc_id"])
    doc_row.update(size=d["size"], mtime_ns=d["mtime_ns"], ctime_ns=d.get("ctime_ns"))
    rows = seg.store.passages_of(d["doc_id"])
    if vectors is None:
        vectors = seg.vectors.vectors([r["row"] for r in rows])
    else:
        vectors = vectors[[r["row"] for r in rows]]
    writer.add(doc_row, rows, vectors)


def publish_generation(idx: IndexDir, base: dict, entries: list[dict], deleted: dict[str, set[int]],
                       refreshed: dict, segments: dict[str, SegmentReader] | None = None) -> Path:
    """Write ``gen-N.tmp/`` (manifest + deletion lists) and make it live."""
    tmp = idx.next_generation().with_suffix(".tmp")
    tmp.mkdir(parents=True)
    out = []
    docs = rows = 0
    for e in entries:
        dead = sorted(deleted.get(e["name"], ()))
        e = {"name": e["name"], "rows": int(e["rows"]), "docs": int(e["docs"]), "deleted_docs": len(dead),
             "deleted_rows": 0}
        if dead:
            (tmp / "deleted").mkdir(exist_ok=True)
            save_array(tmp / "deleted" / f"{e['name']}.npy", np.asarray(dead, dtype=np.int32))
            e["deleted_crc32"] = file_checksum(tmp / "deleted" / f"{e['name']}.npy")
            seg = (segments or {}).get(e["name"]) or open_segment(idx.segments_dir / e["name"])
            e["deleted_rows"] = int(np.isin(seg.passage_doc, dead).sum())
        docs += e["docs"] - e["deleted_docs"]
        rows += e["rows"] - e["deleted_rows"]
        out.append(e)
    write_manifest(tmp, {**base, "documents": docs, "passages": rows, "segments": out,
                         "refreshed": refreshed})
    return idx.publish(tmp)


# ---------------------------------------------------------------------------- merging
MAX_SEGMENTS = 10  # more than this many segments: merge the smallest
MERGE_FACTOR = 10  # at most this many segments merged at once
PURGE_SHARE = 0.2  # a segment with more than this share of deleted rows is rewritten


def plan_merge(entries: list[dict], max_segments: int = MAX_SEGMENTS, factor: int = MERGE_FACTOR,
               purge: float = PURGE_SHARE) -> list[list[str]]:
    """Groups of segments to merge (pure). A segment with more than ``purge`` of its
    rows deleted is rewritten; above ``max_segments``, the group of smallest segments
    that removes segments at the least cost per segment removed (rows copied / segments
    removed) is merged, so small segments merge often and large ones rarely."""
    groups: list[list[str]] = []
    for e in entries:
        if e["rows"] and e.get("deleted_rows", 0) > purge * e["rows"]:
            groups.append([e["name"]])
    if len(entries) > max_segments:
        by_size = sorted(entries, key=lambda e: (e["rows"] - e.get("deleted_rows", 0), e["name"]))
        sizes = [e["rows"] - e.get("deleted_rows", 0) for e in by_size]
        best, best_cost = 2, None
        for k in range(2, min(factor, len(by_size)) + 1):
            cost = sum(sizes[:k]) / (k - 1)
            if best_cost is None or cost < best_cost:
                best, best_cost = k, cost
        group = [e["name"] for e in by_size[:best]]
        groups = [g for g in groups if g[0] not in group]
        groups.insert(0, group)
    return groups


def merge_segments(idx: IndexDir, prev: Previous, names: list[str], vector_kind: str = "auto") -> dict:
    """Write the live documents of the segments ``names`` as one new segment (in path
    order, as a fresh build writes them), publish a generation that lists it instead, and
    return what was done. Searches go on against the previous generation meanwhile."""
    t0 = time.time()
    entries = prev.manifest["segments"]
    index_of = {e["name"]: i for i, e in enumerate(entries)}
    chosen = [index_of[n] for n in names]
    docs = sorted((d for d in prev.docs.values() if d["seg"] in chosen), key=lambda d: d["path"])
    stamp = now_iso()
    entry = _merged_segment(idx, prev, chosen, docs, vector_kind, stamp) if docs else None
    merged_paths = {d["path"] for d in docs}
    new_entries, deleted = [], {}
    placed = False
    for i, e in enumerate(entries):
        if i in chosen:
            if not placed and entry is not None:  # nothing live left: the segments are just dropped
                new_entries.append(entry)
            placed = True
            continue
        new_entries.append(e)
        deleted[e["name"]] = prev.deleted[i]
    refreshed = {k: v for k, v in (prev.manifest.get("refreshed") or {}).items() if k not in merged_paths}
    base = {k: prev.manifest[k] for k in ("created", "corpus", "embedder", "pipeline", "scan_started_ns")
            if k in prev.manifest}
    segs = {seg.name: seg for seg in prev.segments}
    publish_generation(idx, base, new_entries, deleted, refreshed, segs)
    idx.clean(keep_previous=prev.gen)
    return {"segments": names, "into": entry["name"] if entry else None, "passages": entry["rows"] if entry else 0,
            "documents": entry["docs"] if entry else 0, "seconds": round(time.time() - t0, 3)}


def _merged_segment(idx: IndexDir, prev: Previous, chosen: list[int], docs: list[dict], vector_kind: str,
                    stamp: str) -> dict:
    writer = SegmentWriter(idx.next_segment(), int(prev.manifest["embedder"]["dim"]), prev.manifest["embedder"])
    try:
        all_vectors: dict[int, np.ndarray] = {}
        for s in chosen:
            seg = prev.segments[s]
            live_rows = sum(d["n_passages"] or 0 for d in docs if d["seg"] == s)
            if live_rows > 1000 and live_rows > seg.rows // 4:  # one read beats many
                all_vectors[s] = seg.vectors.all_vectors()
        for d in docs:
            copy_document(writer, prev.segments[d["seg"]], d, all_vectors.get(d["seg"]))
        all_vectors.clear()
        return writer.finish(vector_kind, created=stamp)
    except BaseException:
        writer.abandon()
        raise



def compact_local(index_dir: str | Path, vector_kind: str = "auto") -> IndexReport:
    """Merge every segment of the live generation into one, purging deletions."""
    idx = IndexDir(index_dir)
    t0 = time.time()
    report = IndexReport()
    with idx.writer_lock():
        idx.clean(keep_previous=None)
        prev = load_previous(idx, rebuild=False)
        if prev is None:
            raise IndexNotFound(f"no index at {idx.root}/ — run `kb index FOLDER` first")
        if prev.legacy:
            raise OldFormat(f"index at {idx.root}/ has format 1 — run `kb index` once to migrate it")
        names = [e["name"] for e in prev.manifest["segments"]]
        if len(names) > 1 or any(e.get("deleted_docs") for e in prev.manifest["segments"]):
            report.merge = merge_segments(idx, prev, names, vector_kind)
            report.updated = True
        final = idx.current()
        m = read_manifest(final)
        report.generation, report.passages, report.documents = final.name, m["passages"], m["documents"]
        report.segments = len(m["segments"])
    report.seconds = time.time() - t0
    return report


