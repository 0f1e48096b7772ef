"""The index on disk.

::

    index/
      CURRENT              name of the live generation, replaced atomically
      gen-000007/          one generation: which segments, which of their documents are deleted
        manifest.json      format version, kb version, embedder, counts, corpus root, segments
        deleted/seg-N.npy  document numbers of seg-N deleted since it was written
      segments/seg-000003/ immutable pieces of the library (see kb.store.local.segments)
      pending.sqlite       vectors embedded by a run that has not finished yet
      .lock                held by the one writer

A writer builds a new segment (``seg-N.tmp/`` renamed) and ``gen-N.tmp/``, fsyncs them,
renames the generation to ``gen-N/`` and only then replaces ``CURRENT``. A run killed at
any moment leaves the previous generation live and complete; leftovers (unfinished
segments, segments no live generation lists) are removed by the next run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kb import __version__
from kb.caches import open_cache
from kb.errors import IndexBusy, IndexDamaged, IndexNotFound, KBError, OldFormat

FORMAT_VERSION = 2  # 1: one monolithic generation (migrated by `kb index`); 2: segments

SCHEMA = """
CREATE TABLE documents (
    doc_idx INTEGER PRIMARY KEY,
    doc_id TEXT UNIQUE NOT NULL,
    path TEXT NOT NULL,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    encoding TEXT,
    format TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    ctime_ns INTEGER,
    n_passages INTEGER,
    indexed_at TEXT,
    meta TEXT NOT NULL,
    offsets TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE passages (
    row INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    doc_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent TEXT,
    ordinal INTEGER,
    start INTEGER, "end" INTEGER, orig_start INTEGER, orig_end INTEGER,
    vkey TEXT NOT NULL,
    heading_path TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens TEXT NOT NULL
);
"""
# Short columns first: a scan of sizes and times, or of kinds, then never reads through a
# document's text (SQLite keeps long values in overflow pages, read only when reached).
# Indexes (by document, parent and vector key) are created once a segment's rows are in.

DOC_COLUMNS = ("doc_idx", "doc_id", "path", "title", "meta", "text", "offsets", "content_hash", "encoding",
               "format", "size", "mtime_ns", "ctime_ns", "n_passages", "indexed_at")
PASSAGE_COLUMNS = ("row", "id", "doc_id", "kind", "heading_path", "text", "start", "end", "orig_start",
                   "orig_end", "parent", "ordinal", "vkey", "tokens")


@contextmanager
def durable(path: Path, mode: str = "wb", **kwargs):
    """Open ``path`` for writing; when the block ends, its bytes are on the disk (fsync)."""
    with open(path, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: Path) -> None:
    """Flush a file written by someone else (FAISS) to the disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_array(path: Path, arr: np.ndarray) -> None:
    with durable(path) as f:
        np.save(f, arr)


def save_json(path: Path, obj: Any, indent: int | None = None) -> None:
    with durable(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)


SEAL = "crc32"  # the key of a JSON file's own checksum


def _seal_of(obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != SEAL}
    text = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(text.encode('utf-8')):08x}"


def sealed(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the CRC-32 of its own canonical JSON (a manifest, a segment.json)."""
    return {**obj, SEAL: _seal_of(obj)}


def check_seal(obj: Any) -> None:
    """ValueError when a sealed JSON object no longer matches its seal (files written before
    seals existed have none and are taken as they are)."""
    if isinstance(obj, dict) and SEAL in obj and obj[SEAL] != _seal_of(obj):
        raise ValueError("its checksum does not match")


def file_checksum(path: Path) -> str:
    """CRC-32 of a file, read in 1 MiB pieces (hex)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """A warning a reader cannot act on but should see: once per process."""
    if message not in _SAID:
        _SAID.add(message)
        print(f"warning: {message}", file=sys.stderr)


class IndexDir:
    """Paths and atomic switching for one index folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    def check_folder(self) -> None:
        """A one-line error when the index path cannot be an index folder."""
        if self.root.exists() and not self.root.is_dir():
            raise KBError(f"{self.root} is a file, not an index folder — give --index a folder")

    def current(self) -> Path | None:
        """The live generation: the one ``CURRENT`` names, or — when ``CURRENT`` is damaged
        (empty, garbage, naming something that is not a generation here) — the newest intact
        one, said once on stderr; ``None`` when there is none."""
        self.check_folder()
        missing = False
        try:
            name: str | None = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            name, missing = None, True
        except UnicodeDecodeError:
            name = None
        except PermissionError as e:
            raise unreadable(self.root, "CURRENT") from e
        except OSError as e:
            raise KBError(f"cannot read the index at {self.root}/ ({_reason(e)})") from e
        valid = bool(name) and name.startswith("gen-") and "/" not in name and "\\" not in name
        if valid and (self.root / name).is_dir():  # its manifest is read (and judged) by the caller
            return self.root / name
        fallback = self.newest_intact()
        if fallback is not None:
            shown = "missing" if missing else "unreadable bytes" if name is None else repr(name[:40])
            _say_once(f"index at {self.root}/: CURRENT is damaged ({shown}); reading {fallback.name}, the newest "
                      "intact generation — the next `kb index` repairs CURRENT")
            return fallback
        if missing:
            return None
        if not valid:
            raise KBError(f"index at {self.root}/ is damaged (CURRENT names {(name or '')[:40]!r}) — "
                          "rebuild it with `kb index FOLDER --rebuild`")
        return None

    def newest_intact(self) -> Path | None:
        """The newest generation whose manifest reads and whose segments all exist."""
        for gen in reversed(self.generations()):
            if gen.name.endswith(".tmp"):
                continue
            data = intact_json(gen / "manifest.json")
            if data is None or not isinstance(data.get("embedder"), dict):
                continue
            try:
                names = [e["name"] for e in data["segments"]] if data.get("format_version") != 1 else []
            except (KeyError, TypeError):
                continue
            if all((self.segments_dir / n / "segment.json").is_file() for n in names):
                return gen
        return None

    def recorded_embedder(self) -> dict[str, Any] | None:
        """The embedder of the newest generation whose manifest still reads and matches its
        seal, else of the newest segment that recorded one; None when no record survives."""
        segments = sorted(self.segments_dir.glob("seg-*/segment.json")) if self.segments_dir.is_dir() else []
        for path in [g / "manifest.json" for g in reversed(self.generations())] + segments[::-1]:
            data = intact_json(path)
            if data is not None and isinstance(data.get("embedder"), dict):
                return data["embedder"]
        return None

    def require_current(self) -> Path:
        gen = self.current()
        if gen is None:
            raise IndexNotFound(f"no index at {self.root}/ — run `kb index FOLDER` first")
        return gen

    @property
    def segments_dir(self) -> Path:
        return self.root / "segments"

    def next_segment(self) -> Path:
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name[4:].split(".")[0]) for p in self.segments_dir.iterdir()
                   if p.name.startswith("seg-") and p.name[4:].split(".")[0].isdigit()]
        return self.segments_dir / f"seg-{max(numbers, default=0) + 1:06d}"

    def generations(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("gen-"))

    def next_generation(self) -> Path:
        numbers = [int(p.name.split("-")[1].split(".")[0]) for p in self.generations()
                   if p.name.split("-")[1].split(".")[0].isdigit()]
        n = max(numbers, default=0) + 1
        return self.root / f"gen-{n:06d}"

    @contextmanager
    def writer_lock(self):
        self.check_folder()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            if not os.access(self.root, os.W_OK):
                os.close(fd)
                raise PermissionError(13, "Permission denied")
        except OSError as e:
            raise KBError(f"cannot write the index folder {self.root}/ ({_reason(e)}) — "
                          "choose another with --index") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise IndexBusy(f"another `kb index` is writing {self.root}/ — wait for it to finish") from e
            yield
        finally:
            os.close(fd)

    def publish(self, tmp: Path) -> Path:
        """Make the complete generation in ``tmp`` (named ``gen-N.tmp``) the live one."""
        final = tmp.with_name(tmp.name[: -len(".tmp")])
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        pointer = self.root / "CURRENT.tmp"
        with durable(pointer, "w", encoding="utf-8") as f:
            f.write(final.name + "\n")
        os.replace(pointer, self.current_file)
        _fsync_dir(self.root)
        return final

    def clean(self, keep_previous: Path | None = None) -> None:
        """Remove unfinished and superseded generations, and segments that neither the
        live generation nor ``keep_previous`` lists. Readers that still hold an old
        generation open keep working (files stay alive while open)."""
        live = self.current()
        keep_segments: set[str] = set()
        for gen in (live, keep_previous):
            if gen is not None:
                names = segment_names(gen)
                if names is None:
                    return  # a manifest that does not read: remove nothing a repair could still use
                keep_segments |= set(names)
        for gen in self.generations():
            if gen == live or gen == keep_previous:
                continue
            shutil.rmtree(gen, ignore_errors=True)
        if self.segments_dir.is_dir():
            for seg in self.segments_dir.iterdir():
                if seg.name not in keep_segments:
                    shutil.rmtree(seg, ignore_errors=True)
        try:
            (self.root / "CURRENT.tmp").unlink()
        except FileNotFoundError:
            pass


def intact_json(path: Path) -> dict[str, Any] | None:
    """A manifest or segment.json when it reads and matches its seal, else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        check_seal(data)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def segment_names(gen: Path) -> list[str] | None:
    """The segments a generation lists (none for a format-1 one; None when its manifest does
    not read or match its seal)."""
    data = intact_json(gen / "manifest.json")
    try:
        return None if data is None else [str(e["name"]) for e in data.get("segments", [])]
    except (TypeError, KeyError):
        return None


def _reason(e: BaseException) -> str:
    """An OS or library error as a short phrase, without the path it names."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return f"{type(e).__name__}: {e}"[:200]


def damaged(where: Path, e: BaseException, what: str = "") -> KBError:
    """The one message for an index that does not read: ``what`` names the file inside ``where``
    when it is known. Permission denied is said as such (a rebuild would not mend it)."""
    if isinstance(e, PermissionError):
        return unreadable(where, what)
    if what:
        return IndexDamaged(f"index at {where}/ is damaged: {what} is missing or unreadable ({_reason(e)}) — "
                            "rebuild it with `kb index FOLDER --rebuild`")
    return IndexDamaged(f"index at {where}/ is damaged or unreadable ({_reason(e)}) — "
                        "rebuild it with `kb index FOLDER --rebuild`")


def unreadable(where: Path, what: str = "") -> KBError:
    """Files this user may not read: not damage, and nothing a rebuild would mend."""
    return KBError(f"cannot read the index at {where}/{what} (permission denied) — run kb as the user who "
                   "owns it, or give that user read access")


def read_manifest(gen: Path, legacy_ok: bool = False) -> dict[str, Any]:
    """A generation's manifest; a format-1 one only with ``legacy_ok`` (for migration)."""
    try:
        data = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("embedder"), dict):
            raise ValueError("not a kb manifest")
        check_seal(data)
    except (OSError, ValueError) as e:
        raise damaged(gen.parent, e, f"{gen.name}/manifest.json") from e
    version = data.get("format_version")
    if version == 1 and legacy_ok:
        return data
    if version == 1:
        raise OldFormat(f"index at {gen.parent}/ has format 1 (before segments) — run `kb index` once to "
                        "migrate it (its vectors are reused, nothing is embedded again)")
    if version != FORMAT_VERSION:
        raise KBError(
            f"index at {gen.parent}/ has format {version}, this kb reads format "
            f"{FORMAT_VERSION} — rebuild it with `kb index FOLDER --rebuild`"
        )
    if not isinstance(data.get("segments"), list):
        raise damaged(gen.parent, ValueError("manifest.json lists no segments"))
    return data


def write_manifest(gen: Path, data: dict[str, Any]) -> None:
    save_json(gen / "manifest.json", sealed({"format_version": FORMAT_VERSION, "kb_version": __version__, **data}),
              indent=2)


def create_db(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
    return con


def open_db(path: Path) -> sqlite3.Connection:
    """Read-only connection, shareable across threads (callers serialise access)."""
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    con.row_factory = sqlite3.Row
    return con


class PendingVectors:
    """Vectors embedded by a run in progress, committed every batch, so a killed run
    does not have to embed them again. Cleared once a generation is published."""

    def __init__(self, path: Path, embedder_key: str, dim: int, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.dim = dim
        self.con = open_cache(path, "CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, embedder TEXT, v BLOB);",
                              warn)
        # Vectors of another embedder are useless here.
        self.con.execute("DELETE FROM vec WHERE embedder != ?", (embedder_key,))
        self.con.commit()
        self.embedder_key = embedder_key

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i: i + 500]
            q = f"SELECT key, v FROM vec WHERE key IN ({','.join('?' * len(chunk))})"
            for key, blob in self.con.execute(q, chunk):
                out[key] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, keys: list[str], vectors: np.ndarray) -> None:
        self.con.executemany(
            "INSERT OR REPLACE INTO vec VALUES (?, ?, ?)",
            [(k, self.embedder_key, np.ascontiguousarray(v, dtype=np.float32).tobytes())
             for k, v in zip(keys, vectors)],
        )
        self.con.commit()

    def close(self) -> None:
        self.con.close()

    @staticmethod
    def remove(path: Path) -> None:
        """Drop the pending vectors once a generation holding them is published."""
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                os.unlink(str(path) + suffix)
            except FileNotFoundError:
                pass


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
