"""Narrowing a search: one filter model for every front end, the fields each document carries,
which filter emptied a result, and facet counts.

A :class:`Filters` is AND across fields and OR within one (``source=("人社局", "财政局")`` and
``type=("pdf",)``: a PDF from either). Values are checked where they enter
(:meth:`Filters.make`): a bad one is a :class:`FilterError` naming its field, which the CLI
shows as a usage error (exit 2) and the API as 422. A filter reaches a store as the set of
document ids it allows, so it means the same on every store."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any

import numpy as np

from kb.errors import KBError
from kb.store.base import DocSet

TYPES = ("txt", "md", "html", "docx", "pdf", "scan", "pptx", "xlsx", "epub")
NO_DATE = "无日期"  # the year facet of a document without its own date
MAX_VALUES = 100  # values of one field
MAX_VALUE_CHARS = 200
LIST_FIELDS = ("source", "author", "folder", "type", "tag", "doc")
FACET_FIELDS = ("source", "year", "folder", "type", "tag")
FACET_DEPTH = 100  # facets count the documents of the first FACET_DEPTH hits
FACET_VALUES = 20  # values shown per facet (the most frequent)

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE = re.compile(r"^(\d{4})(?:[-/.年](\d{1,2})(?:[-/.月](\d{1,2})日?)?月?)?年?$")


class FilterError(KBError):
    """A filter value that cannot be: names the field (``field``) it came in."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def document_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What a document is filtered and counted by: ``source``, ``author``, ``date`` (its own,
    ``YYYY-MM-DD``, or ``None``), ``year``, ``folder`` (its folder inside the library, ``""`` at
    the top), ``type`` and ``tags``."""
    meta = doc.get("meta") or {}
    path = str(doc.get("path") or "")
    fmt = str(doc.get("format") or "")
    own = meta.get("date") if isinstance(meta.get("date"), str) and _ISO_DATE.match(meta["date"]) else None
    tags = meta.get("tags") or []
    return {
        "source": str(meta.get("source") or ""),
        "author": str(meta.get("author") or ""),
        "date": own,
        "year": own[:4] if own else NO_DATE,
        "folder": path.rsplit("/", 1)[0] if "/" in path else "",
        "type": "scan" if fmt == "image" else fmt,
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
    }


def parse_date(value: str, field: str, end: bool = False) -> str:
    """``2024``, ``2024-07``, ``2024-07-11`` (or ``/``, ``.``, ``年月日``) → ``YYYY-MM-DD``; a year
    or month alone means its first day, or with ``end`` its last."""
    m = _DATE.match(str(value).strip())
    if not m:
        raise FilterError(field, f"{value!r} is not a date (use YYYY-MM-DD, YYYY-MM or YYYY)")
    y, mo, d = int(m.group(1)), m.group(2), m.group(3)
    try:
        if mo is None:
            day = date(y, 12, 31) if end else date(y, 1, 1)
        elif d is None:
            day = date(y, int(mo), 1)
            if end:
                following = date(y + 1, 1, 1) if day.month == 12 else date(y, day.month + 1, 1)
                day = date.fromordinal(following.toordinal() - 1)
        else:
            day = date(y, int(mo), int(d))
    except ValueError as e:
        raise FilterError(field, f"{value!r} is not a date ({e})") from e
    return day.isoformat()


def _folder(value: str) -> str:
    parts = [p for p in str(value).replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FilterError("folder", f"{value!r} leaves the library (no '..')")
    return "/".join(parts)


@dataclass(frozen=True)
class Filters:
    """Which documents a search may answer from (empty: all)."""

    source: tuple[str, ...] = ()
    author: tuple[str, ...] = ()
    after: str | None = None  # YYYY-MM-DD, inclusive
    before: str | None = None  # YYYY-MM-DD, inclusive
    folder: tuple[str, ...] = ()  # a folder matches its whole sub-tree
    type: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    doc: tuple[str, ...] = ()

    @classmethod
    def make(cls, **values: Any) -> Filters:
        """Filters from user values (strings or lists of strings; ``None`` and empty ignored),
        checked: :class:`FilterError` names the first field that is wrong."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            name = sorted(unknown)[0]
            raise FilterError(name, f"unknown filter (use {', '.join(f.name for f in fields(cls))})")
        out: dict[str, Any] = {}
        for name in LIST_FIELDS:
            raw = values.get(name)
            items = [raw] if isinstance(raw, str) else list(raw or ())
            items = [str(v).strip() for v in items if v is not None and str(v).strip()]
            if len(items) > MAX_VALUES:
                raise FilterError(name, f"at most {MAX_VALUES} values")
            if any(len(v) > MAX_VALUE_CHARS for v in items):
                raise FilterError(name, f"a value is over {MAX_VALUE_CHARS} characters")
            if name == "type":
                items = [v.lower().lstrip(".") for v in items]
                bad = [v for v in items if v not in TYPES]
                if bad:
                    raise FilterError(name, f"{bad[0]!r} is not a type (use {', '.join(TYPES)})")
            if name == "folder":
                items = [_folder(v) for v in items]
            out[name] = tuple(dict.fromkeys(items))
        for name, end in (("after", False), ("before", True)):
            raw = values.get(name)
            out[name] = parse_date(raw, name, end=end) if raw not in (None, "") else None
        if out["after"] and out["before"] and out["after"] > out["before"]:
            raise FilterError("before", f"{out['before']} is before --after {out['after']}")
        return cls(**out)

    def __bool__(self) -> bool:
        return bool(self.set_fields())

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (lists for the repeatable ones)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v}

    def set_fields(self) -> list[str]:
        """The names of the fields that are set, in declaration order."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


class FieldIndex:
    """The documents of one version by field value (a filter costs what it selects, never a
    pass over every document in Python): positions per source, author, type, tag and folder,
    and each document's date as a number."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.ids = [d["doc_id"] for d in docs]
        self.position = {doc_id: i for i, doc_id in enumerate(self.ids)}
        lists: dict[str, dict[str, list[int]]] = {name: {} for name in ("source", "author", "type", "tag", "folder")}
        dates = np.full(len(docs), -1, dtype=np.int32)
        for i, d in enumerate(docs):
            f = document_fields(d)
            for name in ("source", "author", "type", "folder"):
                lists[name].setdefault(f[name], []).append(i)
            for tag in dict.fromkeys(f["tags"]):
                lists["tag"].setdefault(tag, []).append(i)
            if f["date"]:
                dates[i] = int(f["date"].replace("-", ""))
        self.by_value = {name: {v: np.asarray(p, dtype=np.int64) for v, p in values.items()}
                         for name, values in lists.items()}
        self.dates = dates

    def _mask(self, filters: Filters, name: str) -> np.ndarray:
        n = len(self.ids)
        if name == "after":
            return self.dates >= int(filters.after.replace("-", ""))
        if name == "before":
            return (self.dates >= 0) & (self.dates <= int(filters.before.replace("-", "")))
        mask = np.zeros(n, dtype=bool)
        if name == "doc":
            mask[[self.position[i] for i in filters.doc if i in self.position]] = True
        elif name == "folder":
            for folder, where in self.by_value["folder"].items():
                if any(not p or folder == p or folder.startswith(p + "/") for p in filters.folder):
                    mask[where] = True
        else:
            index = self.by_value[name]
            found = [where for where in map(index.get, getattr(filters, name)) if where is not None]
            if found:
                mask[np.concatenate(found)] = True
        return mask

    def allowed(self, filters: Filters | None) -> DocSet | None:
        """The ids of the documents ``filters`` allows, with their positions (``None``: no filter)."""
        if not filters:
            return None
        mask = np.ones(len(self.ids), dtype=bool)
        for name in filters.set_fields():
            mask &= self._mask(filters, name)
        return DocSet(np.flatnonzero(mask), self.docs)

    def emptying_field(self, filters: Filters) -> str | None:
        """The first field set in ``filters`` that alone matches no document (None: each
        matches some, only together they match none)."""
        for name in filters.set_fields():
            if not self._mask(filters, name).any():
                return name
        return None

    def emptied_by(self, filters: Filters) -> str:
        """Why no document passes, a sentence for the user: the field that alone matches
        none, else the combination."""
        name = self.emptying_field(filters)
        if name is None:
            return "no document matches all of these filters together (" + ", ".join(filters.set_fields()) + ")"
        return f"no document matches {name} {shown_value(getattr(filters, name), ' or ')}"


def shown_value(value: tuple[str, ...] | str, joiner: str) -> str:
    return joiner.join(value) if isinstance(value, tuple) else value


def facet_counts(docs: list[dict[str, Any]], filters: Filters | None = None) -> dict[str, dict[str, int]]:
    """Documents per source, year, folder, type and tag among ``docs`` (each counted once):
    the most frequent :data:`FACET_VALUES` of each. Folders are counted one level below the
    folder filtered by (when exactly one is), else at the top level."""
    base = filters.folder[0] if filters is not None and len(filters.folder) == 1 else ""
    counts: dict[str, Counter] = {name: Counter() for name in FACET_FIELDS}
    for d in {d["doc_id"]: d for d in docs}.values():
        f = document_fields(d)
        for name in ("source", "year", "type"):
            counts[name][f[name]] += 1
        folder = f["folder"]
        if base:
            folder = folder[len(base) + 1:] if folder.startswith(base + "/") else ""
        counts["folder"][folder.split("/", 1)[0]] += 1
        for tag in dict.fromkeys(f["tags"]):
            counts["tag"][tag] += 1
    return {name: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:FACET_VALUES])
            for name, c in counts.items()}
