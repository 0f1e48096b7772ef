"""Tags a library gives its files by path: ``FOLDER/.kb/tags.csv``, one rule a line,
``pattern,tag[,tag…]`` (``#`` starts a comment; tags in one cell may be split by ``;`` or ``、``). A pattern is
matched against the file's path inside the library with shell rules, ``*`` crossing folders
(``2024/人社/*``, ``*.pdf``, ``通知*``)."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
from pathlib import Path

from kb.errors import KBError
from kb.read.documents import split_tags

TAGS_FILE = Path(".kb") / "tags.csv"
MAX_BYTES = 1 << 20
MAX_RULES = 10_000


class TagRules:
    """The rules of one tags.csv, and a digest of them (a change re-tags the library)."""

    def __init__(self, rules: list[tuple[str, list[str]]], digest: str) -> None:
        self.rules = rules
        self.digest = digest

    @classmethod
    def load(cls, corpus: Path) -> TagRules | None:
        """The rules of ``corpus``'s tags file, or None when it has none. A file that cannot be
        a rules file is a one-line error naming it."""
        path = Path(corpus) / TAGS_FILE
        try:
            if not path.is_file():
                return None
            raw = path.read_bytes()[: MAX_BYTES + 1]
        except OSError as e:
            raise KBError(f"{TAGS_FILE}: cannot be read ({e.strerror or e})") from e
        if len(raw) > MAX_BYTES:
            raise KBError(f"{TAGS_FILE}: over {MAX_BYTES // 1024} KB — one rule a line, pattern,tag")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise KBError(f"{TAGS_FILE}: not UTF-8 text") from e
        rules: list[tuple[str, list[str]]] = []
        for row in csv.reader(io.StringIO(text)):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            pattern = row[0].strip()
            if pattern.lower() in ("pattern", "glob", "path") and len(rules) == 0:
                continue  # a header line
            tags = [t for cell in row[1:] for t in split_tags(cell)]
            if tags:
                rules.append((pattern, tags[:50]))
            if len(rules) > MAX_RULES:
                raise KBError(f"{TAGS_FILE}: more than {MAX_RULES} rules")
        return cls(rules, hashlib.sha1(repr(rules).encode("utf-8")).hexdigest()[:16])

    def tags_for(self, rel: str) -> list[str]:
        """The tags of the file at ``rel`` (its path inside the library), in rule order."""
        out: dict[str, None] = {}
        for pattern, tags in self.rules:
            if fnmatch.fnmatchcase(rel, pattern):
                out.update(dict.fromkeys(tags))
        return list(out)
