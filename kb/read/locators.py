"""Where in its file a passage is: page, slide or spreadsheet rows (pure).

A reader records marks — ``(offset, number, ocr)``: from this offset of the text on,
the text is on page/slide/row ``number`` — and :func:`encode` packs them (offsets and
numbers as deltas) into the document's metadata under :data:`KEY`, which is never shown
as metadata (:func:`public_meta`). :func:`locate` turns a passage's span into its
locator, ``第3页`` / ``第3–4页`` / ``第5张幻灯片`` / ``第12–20行``, and says whether any
of its text came from OCR.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from kb.records import LOCATORS_KEY

KEY = LOCATORS_KEY
UNITS = ("page", "slide", "row", "image")  # "image": a single picture, no number shown
_LABEL = {"page": "第{}页", "slide": "第{}张幻灯片", "row": "第{}行"}


def encode(unit: str, marks: list[tuple[int, int, bool]], labels: list[str] = ()) -> str:
    """Marks (offset into the normalised text, number, from OCR) as a compact string; ``labels``
    are the printed numbers of pages 1, 2, … (a PDF's page labels), shown instead of the numbers."""
    if unit not in UNITS:
        raise ValueError(f"unknown locator unit {unit!r}")
    marks = sorted(marks, key=lambda m: m[0])
    at, n, ocr = [], [], []
    last_at = last_n = 0
    for i, (offset, number, from_ocr) in enumerate(marks):
        at.append(offset - last_at)
        n.append(number - last_n)
        last_at, last_n = offset, number
        if from_ocr:
            ocr.append(i)
    data = {"unit": unit, "at": at, "n": n}
    if ocr:
        data["ocr"] = "all" if len(ocr) == len(marks) else ocr
    if labels:
        data["labels"] = [str(label)[:20] for label in labels]
    return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True)
class Locators:
    unit: str
    at: tuple[int, ...]
    numbers: tuple[int, ...]
    ocr: frozenset[int]
    labels: tuple[str, ...] = ()

    def label(self, number: int) -> str:
        """Number ``number`` as the document prints it (its page label), else the number."""
        return self.labels[number - 1] if 0 < number <= len(self.labels) and self.labels[number - 1] else str(number)

    def locate(self, start: int, end: int) -> tuple[str, str, bool]:
        """``(label, numbers, ocr)`` of the span ``[start, end)``: the label as shown
        (``第3–4页``), the bare numbers (``3-4``, for citation styles with a page field)
        and whether any of it was read by OCR."""
        if not self.at:
            return "", "", False
        i = max(0, bisect.bisect_right(self.at, start) - 1)
        j = max(i, bisect.bisect_left(self.at, max(end, start + 1)) - 1)
        ocr = any(k in self.ocr for k in range(i, j + 1))
        lo, hi = min(self.numbers[i:j + 1]), max(self.numbers[i:j + 1])
        if self.unit == "image":
            return "", "", ocr
        first, last = self.label(lo), self.label(hi)
        numbers = first if lo == hi else f"{first}-{last}"
        return _LABEL[self.unit].format(first if lo == hi else f"{first}–{last}"), numbers, ocr


@lru_cache(maxsize=256)
def decode(data: str) -> Locators:
    try:
        raw = json.loads(data)
        at, numbers, pos, num = [], [], 0, 0
        for d, dn in zip(raw["at"], raw["n"]):
            pos += int(d)
            num += int(dn)
            at.append(pos)
            numbers.append(num)
        ocr = raw.get("ocr") or []
        ocr_set = frozenset(range(len(at))) if ocr == "all" else frozenset(int(i) for i in ocr)
        unit = raw["unit"] if raw["unit"] in UNITS else "page"
        return Locators(unit, tuple(at), tuple(numbers), ocr_set, tuple(str(x) for x in raw.get("labels") or ()))
    except (ValueError, KeyError, TypeError):
        return Locators("page", (), (), frozenset())


def locate(meta: Mapping[str, str], start: int, end: int) -> tuple[str, str, bool]:
    """The locator of a passage of a document with metadata ``meta`` (see :meth:`Locators.locate`)."""
    data = meta.get(KEY)
    if not data:
        return "", "", False
    return decode(data).locate(start, end)


def public_meta(meta: Mapping[str, str]) -> dict[str, str]:
    """The metadata a user sees: without kb's own keys (``_…``)."""
    return {k: v for k, v in meta.items() if not k.startswith("_")}
