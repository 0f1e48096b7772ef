"""The local store: an index folder of immutable segments and published generations
(:mod:`kb.store.local.layout`), read through :class:`kb.store.local.snapshot.LocalSnapshot`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kb.errors import IndexMismatch, KBError
from kb.store.base import Head, Store
from kb.store.local.layout import IndexDir, damaged, read_manifest
from kb.store.local.segments import load_deleted, open_segment
from kb.store.local.snapshot import LocalSnapshot


class LocalStore(Store):
    backend = "local"

    def __init__(self, location: str | Path) -> None:
        self.index = IndexDir(location)
        self.location = str(self.index.root)

    def head(self) -> Head:
        gen = self.index.require_current()
        return Head(gen.name, read_manifest(gen), gen)

    def current_version(self) -> str | None:
        gen = self.index.current()
        return None if gen is None else gen.name

    def open(self, head: Head) -> LocalSnapshot:
        try:
            return self._open(head.ref, head.manifest)
        except KBError:
            raise
        except (OSError, sqlite3.Error, ValueError, RuntimeError, KeyError) as e:  # faiss raises RuntimeError
            raise damaged(self.index.root, e) from e

    def _open(self, gen: Path, manifest: dict) -> LocalSnapshot:
        dim = int(manifest["embedder"]["dim"])
        segments, deleted = [], []
        for e in manifest["segments"]:
            seg = open_segment(self.index.root / "segments" / e["name"])
            seg.open_all()  # damage shows now, not in the middle of a query
            if int(seg.info["dim"]) != dim or seg.vectors.dim != dim:
                raise IndexMismatch(f"index at {self.location}/ is inconsistent: {e['name']} holds "
                                    f"{seg.vectors.dim}-d vectors, the manifest says {dim}-d — rebuild it")
            segments.append(seg)
            deleted.append(load_deleted(gen, e))
        return LocalSnapshot(segments, deleted, location=self.location, gen=gen, manifest=manifest)
