"""SQLite files that only save work (vectors of an unfinished run, OCR lines of pages read
before): one that is damaged is started afresh with a warning, never the end of a run."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path


def open_cache(path: Path, schema: str, warn: Callable[[str], None] | None = None,
               timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to the cache at ``path`` holding ``schema`` (``CREATE … IF NOT EXISTS``).
    A file that is not a database, or fails SQLite's quick check, is removed and created
    again; ``warn`` says so once."""
    for attempt in (0, 1):
        con = sqlite3.connect(path, timeout=timeout)
        try:
            if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            con.executescript(schema)
            return con
        except sqlite3.DatabaseError as e:
            con.close()
            if attempt:
                raise
            for suffix in ("", "-journal", "-wal", "-shm"):
                try:
                    os.unlink(str(path) + suffix)
                except FileNotFoundError:
                    pass
            if warn is not None:
                warn(f"{path.name} was damaged ({e}); started afresh — it only saves work, nothing is lost")
    raise AssertionError("unreachable")
