"""Several libraries, each with its own keys (``KB_HOME``, default ``~/.kb``).

- ``libraries.toml``: the named libraries one ``kb serve`` serves — ``[libraries.hr]`` with
  ``index = "…"`` (a folder, a ``.db`` path or a Milvus URI) and optionally ``docs = "…"``;
  ``kb libraries add|list|remove``.
- ``keys.json``: scoped API keys — a name, one library (or ``*``), a role (``read``: search,
  passages, documents, related; ``write``: and upload, remove, re-index; ``admin``: and libraries
  and keys) and the SHA-256 of the secret, never the secret; ``kb tokens add|list|revoke``. A
  server re-reads the file when it changes, so a revoked key is refused at once. When each key was
  last used is kept apart (``keys.used.json``, written by servers), so that a server never writes
  over a revocation.
- ``audit.jsonl``: an append-only log of writes and admin actions (time, key name, library, action,
  object), never a secret.

``KB_ACCESS_TOKEN`` keeps working as a key that opens every library as admin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kb.errors import KBError

HOME_ENV = "KB_HOME"
ROLES = ("read", "write", "admin")
ALL = "*"  # a key for every library
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
USED_EVERY_S = 60  # a key's last use is written at most this often


def kb_home(environ: dict[str, str] | None = None) -> Path:
    env = environ if environ is not None else os.environ
    return Path(env.get(HOME_ENV) or Path.home() / ".kb")


def check_name(name: str, what: str = "library") -> str:
    if not NAME.match(name or ""):
        raise KBError(f"{what} name {name!r}: use 1-40 lower-case letters, digits, - or _ (starting with a letter "
                      "or digit)")
    return name


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- libraries


@dataclass(frozen=True)
class Library:
    name: str
    index: str
    docs: str | None = None


def load_libraries(home: Path) -> dict[str, Library]:
    path = home / "libraries.toml"
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise KBError(f"{path}: not a readable libraries file ({e})") from e
    out = {}
    for name, entry in (data.get("libraries") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), str):
            raise KBError(f"{path}: library {name!r} needs index = \"…\"")
        out[check_name(name)] = Library(name, entry["index"], entry.get("docs") if isinstance(entry.get("docs"), str)
                                        else None)
    return out


def save_libraries(home: Path, libraries: dict[str, Library]) -> None:
    lines = ["# kb's libraries: kb libraries add|list|remove", ""]
    for lib in sorted(libraries.values(), key=lambda x: x.name):
        lines.append(f"[libraries.{lib.name}]")
        lines.append(f"index = {json.dumps(lib.index, ensure_ascii=False)}")  # a TOML basic string
        if lib.docs:
            lines.append(f"docs = {json.dumps(lib.docs, ensure_ascii=False)}")
        lines.append("")
    _write_atomically(home / "libraries.toml", "\n".join(lines))


def parse_library_option(value: str) -> Library:
    """``NAME=INDEX`` of ``--library``."""
    name, sep, index = value.partition("=")
    if not sep or not index.strip():
        raise KBError(f"--library {value!r}: give NAME=INDEX")
    return Library(check_name(name.strip()), index.strip())


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Principal:
    """Who asks: a key's name, the library it opens (or ALL) and its role."""

    name: str
    library: str  # a library's name, or ALL
    role: str

    def opens(self, library: str) -> bool:
        return self.library in (ALL, library)

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


ACCESS_TOKEN = Principal("access-token", ALL, "admin")  # KB_ACCESS_TOKEN's holder
ANYONE = Principal("anonymous", ALL, "admin")  # a request without a key where none is needed (loopback)


@dataclass(frozen=True)
class Key(Principal):
    """A scoped key as ``keys.json`` keeps it: only the hash of its secret."""

    sha256: str = ""
    created: str = ""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeyStore:
    """The keys of ``home``, re-read whenever ``keys.json`` changes."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "keys.json"
        self.used_path = home / "keys.used.json"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: list[Key] = []
        self._used: dict[str, float] = {}
        self._used_written = 0.0

    def keys(self) -> list[Key]:
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                self._stamp, self._keys = None, []
                return []
            if stamp != self._stamp:
                try:
                    raw = json.loads(self.path.read_text(encoding="utf-8"))
                    self._keys = [Key(**{f: k[f] for f in ("name", "library", "role", "sha256", "created")})
                                  for k in raw.get("keys", [])]
                except (OSError, ValueError, KeyError, TypeError) as e:
                    raise KBError(f"{self.path}: not a readable keys file ({e})") from e
                self._stamp = stamp
            return list(self._keys)

    def _save(self, keys: list[Key]) -> None:
        _write_atomically(self.path, json.dumps({"keys": [asdict(k) for k in keys]}, indent=1) + "\n")

    def add(self, name: str, library: str, role: str) -> str:
        """A new key; returns its secret (shown once, stored only as its hash)."""
        check_name(name, "key")
        if library != ALL:
            check_name(library)
        if role not in ROLES:
            raise KBError(f"role {role!r}: one of {', '.join(ROLES)}")
        keys = self.keys()
        if any(k.name == name for k in keys):
            raise KBError(f"a key named {name!r} exists: revoke it first, or choose another name")
        secret = "kb_" + secrets.token_urlsafe(32)
        self._save(keys + [Key(name, library, role, digest(secret), time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                   time.gmtime()))])
        return secret

    def revoke(self, name: str) -> None:
        keys = self.keys()
        if not any(k.name == name for k in keys):
            raise KBError(f"no key named {name!r}")
        self._save([k for k in keys if k.name != name])

    def verify(self, secret: str) -> Key | None:
        """The key whose secret this is (compared in constant time), else None."""
        if not secret:
            return None
        want = digest(secret)
        found = None
        for k in self.keys():
            if hmac.compare_digest(k.sha256, want):
                found = k
        if found is not None:
            self._note_use(found.name)
        return found

    def _note_use(self, name: str) -> None:
        now = time.time()
        with self._lock:
            self._used[name] = now
            if now - self._used_written < USED_EVERY_S:
                return
            self._used_written = now
            used = self.last_used() | self._used
        try:
            _write_atomically(self.used_path, json.dumps(used))
        except OSError:
            pass  # when a key was last used is a convenience, never a reason to refuse it

    def last_used(self) -> dict[str, float]:
        try:
            return {str(k): float(v) for k, v in json.loads(self.used_path.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def listing(self) -> list[dict[str, Any]]:
        """Names, scopes, created and last used: never a secret or its hash."""
        used = self.last_used()
        return [{"name": k.name, "library": k.library, "role": k.role, "created": k.created,
                 "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(used[k.name])) if k.name in used
                 else None} for k in self.keys()]


# --------------------------------------------------------------------------- audit


class AuditLog:
    """``audit.jsonl``: one JSON line per write or admin action, appended (never rewritten)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "audit.jsonl"
        self._lock = threading.Lock()

    def record(self, key: str, library: str, action: str, obj: str = "") -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": key,
                           "library": library, "action": action, "object": obj}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)


def audit_write(home: Path, key: str, library: str, action: str, obj: str = "") -> None:
    """A write from the page or the API, in ``home``'s audit log when kb keeps one there (``home``
    exists: a visitor of a plain local page creates no ``~/.kb``)."""
    if home.is_dir():
        AuditLog(home).record(key, library, action, obj)
