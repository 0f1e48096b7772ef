"""The searcher of a library's live version, for whoever answers more than one question:
the API, the MCP server, the page and the CLI all hold a library this way.

``current()`` returns the searcher of the version the store calls live, loading a newly
published one once (shared by every caller); its model is the one already loaded
(:func:`kb.embed.embedders.embedder_from_spec` loads each once), so a re-index costs no model
load and no restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kb.embed.embedders import Embedder
from kb.errors import IndexDamaged, KBError
from kb.search.searcher import Searcher
from kb.store import open_store

LOAD_TRIES = 3  # a version may be cleaned away while it loads: take the next


class LiveSearcher:
    """One library at ``location`` (a folder, a .db path or a Milvus URI). ``model`` and
    ``embedder``, when given, must be those it was built with; ``warm`` loads the tokenizer
    and model with each new version rather than on its first query. Thread-safe."""

    def __init__(self, location: str | Path, embedder: Embedder | None = None, model: str | None = None,
                 device: str | None = None, warm: bool = False) -> None:
        self.location = location
        self._store = None
        self._given = embedder
        self._model = model
        self._device = device
        self._warm = warm
        self._lock = threading.Lock()
        self._searcher: Searcher | None = None
        self._damage: dict[str, str] = {}  # version -> the damage a query met in it

    def version(self) -> str | None:
        """The store's live version (None: no index yet)."""
        if self._store is None:
            self._store = open_store(self.location)
        return self._store.current_version()

    def current(self, live: str | None = None) -> Searcher:
        """The searcher of the live version (``live``: that version, already asked for).
        Raises the store's :class:`kb.errors.KBError` when there is none or it cannot be read."""
        live = live if live is not None else self.version()
        if live is None:  # the store says why, in its own words
            return self._load()
        s = self._searcher
        if s is not None and s.version == live:
            return s
        with self._lock:
            if self._searcher is not None and self._searcher.version == live:
                return self._searcher
            last: KBError | None = None
            for attempt in range(LOAD_TRIES):
                try:
                    self._searcher = self._load()
                    return self._searcher
                except KBError as e:
                    last = e
                    if attempt + 1 < LOAD_TRIES:
                        time.sleep(0.05)
            raise last  # type: ignore[misc]

    def health(self) -> Searcher:
        """The live searcher, once it is known to be intact: raises the damage a query met in
        this version, or that files changed on disk since it was opened show."""
        s = self.current()
        damage = self._damage.get(s.version)
        if damage is not None:
            raise IndexDamaged(damage)
        try:
            s.snapshot.recheck()
        except IndexDamaged as e:
            self.note_damage(s.version, e)
            raise
        return s

    def note_damage(self, version: str | None, e: IndexDamaged) -> None:
        """Remember damage met while answering (health says so until a new version is live)."""
        if version is None:
            s = self._searcher
            version = s.version if s is not None else None
        if version is not None:
            self._damage = {version: str(e)}

    def _load(self) -> Searcher:
        s = Searcher.load(self.location, model=self._model, embedder=self._given, device=self._device)
        if self._warm:
            s.warm()
        return s
