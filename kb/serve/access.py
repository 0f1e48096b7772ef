"""Who may reach kb and what it may touch: the rules every front end shares (the page,
``kb page``, and any future server).

- kb listens on the loopback interface unless told otherwise; serving to a network
  needs an access token (``KB_ACCESS_TOKEN``), compared in constant time.
- Folders indexed from the page are confined to library roots the operator lists
  (``KB_LIBRARY_ROOTS``, separated by ``os.pathsep``); with none listed, only the folder
  the index was built from (where uploads go too).
- Messages shown to remote users never carry absolute server paths.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path

from kb.errors import KBError

TOKEN_ENV = "KB_ACCESS_TOKEN"
ROOTS_ENV = "KB_LIBRARY_ROOTS"
MIN_TOKEN_CHARS = 12
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class AccessDenied(KBError):
    pass


def is_local_host(host: str | None) -> bool:
    """True for addresses that only this machine can reach. An empty address means
    "every interface" to Streamlit and uvicorn, so it is not local."""
    if not host:
        return False
    host = host.strip().strip("[]")
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_token(environ: dict[str, str] | None = None) -> str | None:
    token = (environ if environ is not None else os.environ).get(TOKEN_ENV, "").strip()
    return token or None


def check_exposure(host: str | None, environ: dict[str, str] | None = None, has_keys: bool = False) -> str | None:
    """Refuse to serve on a non-loopback address without an access token (or, with ``has_keys``,
    the scoped keys of ``kb tokens``). Returns the token that visitors may give (``None`` when there
    is none)."""
    token = configured_token(environ)
    if is_local_host(host) or (token is None and has_keys):
        return token
    if token is None:
        raise AccessDenied(
            f"refusing to listen on {host or 'every interface'} without an access token — "
            f"set {TOKEN_ENV} to a secret of {MIN_TOKEN_CHARS}+ characters, or serve on 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise AccessDenied(f"{TOKEN_ENV} is too short to protect a network service — use {MIN_TOKEN_CHARS}+ "
                           "random characters")
    return token


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison: the time taken says nothing about how much matched."""
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


# --------------------------------------------------------------------------- folders


def library_roots(corpus: str | Path | None = None, environ: dict[str, str] | None = None) -> list[Path]:
    """The folders the page may index: those listed in ``KB_LIBRARY_ROOTS``, else the
    folder the current index was built from."""
    raw = (environ if environ is not None else os.environ).get(ROOTS_ENV, "")
    roots = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    if not roots and corpus:
        roots = [Path(corpus).resolve()]
    return roots


def confine(path: str | Path, roots: Iterable[Path]) -> Path:
    """``path`` resolved (symlinks, ``..``), if it lies inside one of ``roots``; otherwise
    :class:`AccessDenied`. The check runs on the resolved path, so a link out of a root
    is refused too."""
    roots = list(roots)
    if not roots:
        raise AccessDenied(f"indexing other folders from the page is off — the operator can allow folders "
                           f"by listing them in {ROOTS_ENV}")
    try:
        target = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise AccessDenied("this folder cannot be resolved") from e
    for root in roots:
        if target == root or root in target.parents:
            return target
    raise AccessDenied("this folder is outside the folders this knowledge base may index "
                       f"(the operator lists them in {ROOTS_ENV})")


_ABS_PATH = re.compile(r"(?<![\w.:/~])(?:/[^\s/'\"`()（）,，:：;；]+)+/?")


def redact_paths(message: str) -> str:
    """``message`` without absolute server paths: each becomes its last component, so a
    remote visitor learns the file's name but not where the server keeps it."""
    def short(m: re.Match) -> str:
        parts = [p for p in m.group(0).split("/") if p]
        return "…/" + parts[-1] if parts else m.group(0)

    return _ABS_PATH.sub(short, message)


# Streamlit sessions whose visitor gave the access token (kb.serve.page): what Streamlit's own
# routes, outside the page script, check before taking data (kb.serve.streamlit_server).
_AUTHORIZED_SESSIONS: set[str] = set()


def authorize_session(session_id: str) -> None:
    _AUTHORIZED_SESSIONS.add(session_id)


def session_authorized(session_id: str) -> bool:
    return session_id in _AUTHORIZED_SESSIONS
