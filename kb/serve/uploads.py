"""Changes to the knowledge-base folder made from the page: adding uploaded files and
removing documents. Every path is checked to stay inside the folder."""

from __future__ import annotations

import os
import re
import time
import unicodedata
from pathlib import Path

from kb.errors import DocumentError, KBError, UnsupportedFormat
from kb.read.documents import DEFAULT_MAX_BYTES, READERS, SUPPORTED_SUFFIXES, too_large

TRASH = ".kb-trash"  # hidden: the indexer skips it, and nothing removed is lost
# What the page accepts, by extension and nothing else (no MIME families like "text").
UPLOAD_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".docx", ".pdf", ".pptx", ".xlsx", ".epub", ".png",
                   ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
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
