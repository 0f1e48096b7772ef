"""Indexing: bring a store in line with a folder (:func:`update_index`) and compact it
(:func:`compact_index`), whichever store holds the library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kb.embed.embedders import Embedder
from kb.errors import KBError
from kb.index.indexer import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_PAGES,
    Indexer,
    IndexOptions,
    IndexReport,
    Writer,
    _stderr_warn,
)
from kb.index.local import LocalWriter, compact_local
from kb.index.milvus import MilvusWriter, compact_milvus
from kb.store import open_store
from kb.store.local.layout import IndexDir

__all__ = ["IndexReport", "compact_index", "update_index"]


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
    merge: bool = True,
    reuse_vectors: str | Path | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    ocr: str = "auto",
    max_pages: int = DEFAULT_MAX_PAGES,
    words: str | Path | None = None,
    synonyms: str | Path | None = None,
) -> IndexReport:
    """Bring the index in ``index_dir`` in line with the folder ``corpus``.

    ``corpus`` may be ``None`` to re-sync the folder the index was built from.
    ``on_progress(stage, done, total)`` is called as work proceeds (the page's bar).
    A folder that has become empty does not empty the index unless ``prune`` is set.
    Changes are written as one new segment plus deletions; the merge policy may then
    compact segments (reported in ``report.merge``). ``ocr`` and ``max_pages``: how
    scanned PDFs and images are read (changing them re-reads those files only). ``words``,
    ``synonyms``: the library's dictionary and synonyms files (else ``corpus/.kb/words.txt``
    and ``synonyms.txt``, else what the index remembers; see :mod:`kb.text.vocabulary`).
    """
    options = IndexOptions(model=model, device=device, query_prompt=query_prompt, passage_prompt=passage_prompt,
                           rebuild=rebuild, max_file_bytes=max_file_bytes, max_chars=max_chars,
                           vector_kind=vector_kind, prune=prune, merge=merge, progress=progress, ray=ray,
                           ray_address=ray_address, ocr=ocr, max_pages=max_pages,
                           words=str(words) if words is not None else None,
                           synonyms=str(synonyms) if synonyms is not None else None)
    writer: Writer
    if open_store(index_dir).backend == "milvus":
        writer = MilvusWriter(str(index_dir), reuse_vectors=reuse_vectors)
    elif reuse_vectors is not None:
        raise KBError("--reuse-vectors copies vectors into a Milvus store (--store); a local index reuses its own")
    else:
        writer = LocalWriter(IndexDir(index_dir))
    return Indexer(writer, options, embedder=embedder, warn=warn, on_progress=on_progress).run(corpus)


def compact_index(index_dir: str | Path = "index", vector_kind: str = "auto") -> IndexReport:
    """Merge a local index's segments into one, purging deletions; re-weight a Milvus
    library's BM25 vectors with today's average length."""
    if open_store(index_dir).backend == "milvus":
        return compact_milvus(str(index_dir))
    return compact_local(index_dir, vector_kind)
