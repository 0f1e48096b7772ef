"""Storage: one interface (:mod:`kb.store.base`), two stores — an index folder
(:mod:`kb.store.local`) and Milvus (:mod:`kb.store.milvus`). :func:`open_store` is the one
place that tells them apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kb.store.base import Store


def is_milvus(location: Any) -> bool:
    """A ``.db`` path (Milvus Lite) or an ``http(s)://`` URI (a Milvus server)."""
    s = str(location)
    return s.endswith(".db") or s.startswith(("http://", "https://"))


def open_store(location: str | Path) -> Store:
    """The store at ``location``: a folder, a Milvus Lite ``.db`` path or a Milvus URI."""
    if is_milvus(location):
        from kb.store.milvus.store import MilvusStore

        return MilvusStore(str(location))
    from kb.store.local.store import LocalStore

    return LocalStore(location)
