"""Changes to a library's document folder made from the page or the API: adding uploaded files,
removing documents, and re-indexing the folder in the background. Every path is checked to stay
inside the folder."""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

from kb.errors import DocumentError, KBError, UnsupportedFormat
from kb.read.documents import DEFAULT_MAX_BYTES, READERS, SUPPORTED_SUFFIXES, too_large
from kb.serve.access import confine, library_roots

TRASH = ".kb-trash"  # hidden: the indexer skips it, and nothing removed is lost
# What the page accepts, by extension and nothing else (no MIME families like "text").
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".docx", ".pdf", ".pptx", ".xlsx", ".epub", ".png",
                   ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
UPLOAD_LIMIT_MB = 20  # per file, from the page or the API
_UNSAFE = re.compile(r"[^\w\u4e00-\u9fff\u3400-\u4dbf .()（）\[\]【】+-]")


def sanitize_filename(name: str) -> str:
    """A safe file name from an uploaded one: no folders, no control or shell characters,
    no leading dots, at most 120 characters, the suffix kept."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stem = _UNSAFE.sub("_", stem).strip(" ._") or "document"
    suffix = re.sub(r"[^A-Za-z0-9]", "", suffix).lower()
    stem = stem[:120]
    return f"{stem}.{suffix}" if suffix else stem


def inside(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def save_upload(folder: str | Path, name: str, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES,
                suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES) -> Path:
    """Write an uploaded file into ``folder`` under a sanitised, non-clobbering name.
    Refuses types outside ``suffixes`` and files over ``max_bytes``; an identical file
    already there is returned as it is."""
    folder = Path(folder)
    safe = sanitize_filename(name)
    suffix = Path(safe).suffix.lower()
    if suffix not in READERS or suffix not in suffixes:
        raise UnsupportedFormat(f"{name}: unsupported file type {suffix or '(none)'} "
                                f"(supported: {', '.join(suffixes)})")
    if len(data) > max_bytes:
        raise too_large(name, len(data), max_bytes, hint="")
    if not data.strip():
        raise DocumentError(f"{name}: empty file")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe
    n = 2
    while target.exists() or target.is_symlink():
        if not target.is_symlink() and target.is_file() and target.read_bytes() == data:
            return target
        target = folder / f"{Path(safe).stem} ({n}){suffix}"
        n += 1
    if not inside(folder, target):  # pragma: no cover - sanitize_filename already prevents it
        raise KBError(f"{name}: refusing to write outside {folder}")
    tmp = target.with_name(f".{target.name}.uploading")
    _write_new(tmp, data)
    os.replace(tmp, target)
    return target


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that this call creates: never through a link or into a file
    planted at that name (one left there is removed — the link itself, not its target)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def save_library_file(folder: str | Path, name: str, text: str, max_bytes: int = 1024 * 1024) -> Path:
    """Replace ``folder/.kb/name`` (the library's dictionary or synonyms) with ``text``: the
    ``.kb`` folder must be a real folder inside ``folder``, the file is written new beside it
    and renamed over the old one (never written through a link)."""
    folder = Path(folder)
    data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise KBError(f"{name} is larger than {max_bytes // 1024} KB")
    meta = folder / ".kb"
    if meta.is_symlink() or (meta.exists() and not meta.is_dir()):
        raise KBError(".kb in the library folder is not a folder")
    meta.mkdir(exist_ok=True)
    if not inside(folder, meta):
        raise KBError(".kb is outside the library folder")
    target = meta / name
    tmp = meta / f".{name}.{os.getpid()}.tmp"
    _write_new(tmp, data)
    os.replace(tmp, target)
    return target


def remove_document(folder: str | Path, relpath: str) -> Path:
    """Move a document out of the knowledge base into ``folder/.kb-trash/`` (kept, not
    deleted). Returns where it went."""
    folder = Path(folder)
    source = folder / relpath
    if not inside(folder, source) or TRASH in Path(relpath).parts:
        raise KBError(f"{relpath}: not a document of this knowledge base")
    if not source.is_file():
        raise KBError(f"{relpath}: no such file in {folder}")
    dest = folder / TRASH / time.strftime("%Y%m%d-%H%M%S") / relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)
    return dest


def document_folder(corpus: str | Path | None, docs: str | Path | None = None) -> Path:
    """The folder uploads go to and removals act in: the library's own document folder (``docs``,
    from libraries.toml) or else the folder its index was built from, and only while it lies
    inside the library roots (``KB_LIBRARY_ROOTS``) and exists."""
    where = docs or corpus
    if not where or not str(where).strip():
        raise KBError("this library has no document folder (give it one: kb libraries add NAME INDEX --docs DIR)")
    folder = confine(where, library_roots(where))
    if not folder.is_dir():
        raise KBError("the library's document folder no longer exists")
    return folder


MAX_WARNINGS = 20  # the warnings an indexing run keeps for whoever asks how it went


class Reindexer:
    """One library's re-indexing in the background (the API's writes): one run at a time; what is
    asked while one runs is done by one more run after it (requests coalesce, none is lost).
    ``status()`` says how the last run went."""

    def __init__(self, index: str | Path) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._asked: tuple[Path, bool] | None = None  # (folder, prune) of the next run
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {"state": "idle", "runs": 0}

    def request(self, folder: Path, prune: bool = False) -> dict[str, Any]:
        with self._lock:
            prune = prune or (self._asked is not None and self._asked[1])
            self._asked = (folder, prune)
            if self._thread is None:  # no run going: start one (a worker ends only with nothing asked)
                self._status = {"state": "queued", "runs": self._status["runs"]}
                self._thread = threading.Thread(target=self._work, name="kb-reindex", daemon=True)
                self._thread.start()
            else:
                self._status = {**self._status, "again": True}
            return dict(self._status)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The status once no run is left (for tests and scripts)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                thread = self._thread
            if thread is None or not thread.is_alive():
                return self.status()
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                return self.status()

    def _work(self) -> None:
        from kb.index import update_index

        while True:
            with self._lock:
                if self._asked is None:
                    self._thread = None  # under the lock: a request from now on starts a new worker
                    return
                folder, prune = self._asked
                self._asked = None
                self._status = {"state": "running", "runs": self._status["runs"], "started": _now()}
            warnings: list[str] = []
            try:
                report = update_index(folder, self.index, progress=False, prune=prune,
                                      warn=lambda w: len(warnings) < MAX_WARNINGS and warnings.append(w))
                outcome: dict[str, Any] = {"state": "done", "summary": report.summary(), "warnings": warnings}
            except Exception as e:  # a failed run is reported, never raised into a server thread
                outcome = {"state": "failed", "error": str(e) if isinstance(e, KBError) else type(e).__name__}
            with self._lock:
                self._status = {**self._status, **outcome, "runs": self._status["runs"] + 1, "finished": _now()}
                if self._asked is not None:
                    self._status["again"] = True


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
