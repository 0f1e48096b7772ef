"""A library in Milvus (Lite ``.db`` or a server URI) as a :class:`kb.store.base.Store`."""

from __future__ import annotations

from kb.errors import IndexMismatch, IndexNotFound
from kb.store.base import Head, Store
from kb.store.milvus.library import FORMAT, Location, MilvusLibrary, live_manifest
from kb.store.milvus.snapshot import MilvusSnapshot


class MilvusStore(Store):
    backend = "milvus"

    def __init__(self, location: str) -> None:
        self.given = location
        self.loc = Location.parse(location)
        self.location = self.loc.uri

    def head(self) -> Head:
        lib = MilvusLibrary(self.loc)
        try:
            manifest = lib.manifest()
            if manifest is None:
                raise IndexNotFound(f"no kb library in {self.loc} (collections {self.loc.prefix}_*) — "
                                    f"run `kb index FOLDER --store {self.given}` first")
            if manifest.get("format") != FORMAT:
                raise IndexMismatch(f"{self.loc} holds a kb library of format {manifest.get('format')}, this kb "
                                    f"reads format {FORMAT} — rebuild it with "
                                    f"`kb index FOLDER --store {self.given} --rebuild`")
        except BaseException:
            lib.close()
            raise
        return Head(str(manifest.get("generation")), manifest, lib)

    def release(self, head: Head) -> None:
        head.ref.close()

    def current_version(self) -> str | None:
        m = live_manifest(self.given)
        return None if m is None else str(m.get("generation"))

    def open(self, head: Head) -> MilvusSnapshot:
        try:
            return MilvusSnapshot(head.ref, head.manifest)
        except BaseException:
            head.ref.close()
            raise
