"""Offline OCR of scanned pages and images: page images -> lines -> paragraphs.

- The engine is RapidOCR 3 with the PP-OCRv6 small Chinese detection and recognition
  models that ship inside its wheel (onnxruntime on the CPU; nothing is downloaded).
  Compared with rapidocr-onnxruntime 1.4 (PP-OCRv4) on a rendered page of the sample
  speech at 150 dpi: character accuracy 1.000 vs 0.960 (NFKC), 6 s vs 8 s a page on
  two cores (see ``benchmarks/ocr.py``).
- :func:`rejoin` turns the engine's text lines back into paragraphs from their geometry
  alone (pure; golden files in ``tests/golden/ocr``), so that the splitter finds headings
  ``一、`` and sub-points ``一要…`` in a scan as it does in born-digital text.
- :class:`OcrCache` keeps each page's lines by the hash of its pixels: a re-index never
  OCRs an unchanged page again, and a killed run loses at most the page in progress.
- Pixels are capped before anything is decoded (:data:`MAX_IMAGE_PIXELS`), pages are
  rendered at :data:`DPI` and at most :data:`MAX_PAGE_PIXELS`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kb.caches import open_cache
from kb.errors import DocumentError
from kb.text.structure import PAGE_NUMBER, glue, heading_match

# Part of the pipeline settings: another engine (or pass) re-reads scans.
ENGINE = "rapidocr-3/PP-OCRv6-small+gap-pass"
DPI = 150  # scanned PDF pages are rendered at this resolution for OCR
MAX_PAGE_PIXELS = 12_000_000  # a rendered page larger than this (an oversize page) is rendered smaller
MAX_IMAGE_PIXELS = 80_000_000  # an image file larger than this is refused before it is decoded
OCR_MAX_SIDE = 4000  # a decoded image is scaled to this longest side before OCR
INSTALL_HINT = "pip install rapidocr onnxruntime pypdfium2"


@dataclass(frozen=True)
class Line:
    """One text line found by the engine: its box (pixels) and text."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    score: float = 1.0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


# --------------------------------------------------------------------------- engine

_engine = None
_engine_lock = threading.Lock()


def engine():
    """The one RapidOCR engine of this process (loaded on first use, ~0.5 s)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                import logging

                from rapidocr import RapidOCR
            except ImportError as e:
                raise DocumentError(f"OCR is not installed ({INSTALL_HINT})") from e
            _engine = RapidOCR(params={"Global.log_level": "error"})
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        return _engine


def recognize(image) -> list[Line]:
    """The text lines of a PIL image, in the engine's order."""
    import numpy as np

    rgb = image.convert("RGB")
    out = engine()(np.asarray(rgb))
    boxes, txts, scores = out.boxes, out.txts, out.scores
    if boxes is None or txts is None:
        return []
    lines = []
    for box, text, score in zip(boxes, txts, scores):
        xs = [float(p[0]) for p in box]
        ys = [float(p[1]) for p in box]
        text = text.strip()
        if text:
            lines.append(Line(min(xs), min(ys), max(xs), max(ys), text, float(score)))
    return lines


def fit_for_ocr(image):
    """``image`` scaled down so that its longest side is at most :data:`OCR_MAX_SIDE`."""
    w, h = image.size
    side = max(w, h)
    if side <= OCR_MAX_SIDE:
        return image
    scale = OCR_MAX_SIDE / side
    return image.resize((max(1, int(w * scale)), max(1, int(h * scale))))


# --------------------------------------------------------------------------- cache


def image_key(image) -> str:
    """The cache key of a page image: its pixels, size and mode, and the engine."""
    h = hashlib.sha1()
    h.update(f"{ENGINE}\x00{image.mode}\x00{image.size[0]}x{image.size[1]}\x00".encode())
    h.update(image.tobytes())
    return h.hexdigest()


class OcrCache:
    """Page lines by page-image hash, in one SQLite file beside the index. Each page is
    committed as soon as it is read."""

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.warn = warn  # told when a damaged cache file is started afresh
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_cache(self.path, "CREATE TABLE IF NOT EXISTS pages (key TEXT PRIMARY KEY, lines TEXT "
                                  "NOT NULL);", self.warn, timeout=30)
        return self._db

    def get(self, key: str) -> list[Line] | None:
        row = self._conn().execute("SELECT lines FROM pages WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return [Line(*v) for v in json.loads(row[0])]

    def put(self, key: str, lines: list[Line]) -> None:
        data = json.dumps([[ln.x0, ln.y0, ln.x1, ln.y1, ln.text, ln.score] for ln in lines], ensure_ascii=False)
        db = self._conn()
        db.execute("INSERT OR REPLACE INTO pages (key, lines) VALUES (?, ?)", (key, data))
        db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def read_page(image, cache: OcrCache | None = None) -> list[Line]:
    """OCR one page image through the cache: :func:`recognize`, and a second pass when
    the lines found leave a gap where a line could be (:func:`has_gap`)."""
    image = fit_for_ocr(image)
    key = image_key(image) if cache is not None else ""
    if cache is not None:
        lines = cache.get(key)
        if lines is not None:
            return lines
    lines = recognize(image)
    if has_gap(lines):
        lines = lines + recognize(_masked(image, lines))
    if cache is not None:
        cache.put(key, lines)
    return lines


def has_gap(lines: list[Line]) -> bool:
    """True when two visual lines are further apart than one line pitch and a half line:
    room for a line the detector may have missed (it does miss whole lines on clean pages
    at times; a second look at the page without the lines found recovers them)."""
    rows = _rows(lines)
    if len(rows) < 3:
        return False
    spans = [(min(b.y0 for b in r), max(b.y1 for b in r)) for r in rows]
    pitch = statistics.median(b[0] - a[0] for a, b in zip(spans, spans[1:]))
    height = statistics.median(y1 - y0 for y0, y1 in spans)
    return any(b[0] - a[1] > pitch + 0.5 * height for a, b in zip(spans, spans[1:]))


def _masked(image, lines: list[Line]):
    """The page with the lines already read painted white: what is left to find."""
    from PIL import ImageDraw

    out = image.convert("L").copy()
    draw = ImageDraw.Draw(out)
    for ln in lines:
        draw.rectangle((ln.x0 - 2, ln.y0 - 2, ln.x1 + 2, ln.y1 + 2), fill=255)
    return out


# --------------------------------------------------------------------------- paragraphs

_SENTENCE_END = tuple("。！？!?；;：:”’」』")


def _rows(lines: list[Line]) -> list[list[Line]]:
    """Boxes on one visual line, left to right; visual lines top to bottom."""
    if not lines:
        return []
    h = statistics.median(ln.height for ln in lines) or 1.0
    rows: list[list[Line]] = []
    for ln in sorted(lines, key=lambda ln: (ln.cy, ln.x0)):
        if rows:
            row = rows[-1]
            cy = sum(b.cy for b in row) / len(row)
            if abs(ln.cy - cy) <= 0.5 * h:
                row.append(ln)
                continue
        rows.append([ln])
    return [sorted(r, key=lambda b: b.x0) for r in rows]


def _join_boxes(row: list[Line]) -> str:
    out = row[0].text
    for prev, b in zip(row, row[1:]):
        gap = b.x0 - prev.x1
        out += (" " if gap > 0.6 * max(prev.height, b.height) or (out[-1:].isascii() and b.text[:1].isascii())
                else "") + b.text
    return out


def rejoin(lines: list[Line], page_height: float | None = None) -> str:
    """The text of one page from its OCR lines: visual lines joined into paragraphs
    (one per output line). A paragraph starts where a line is indented, follows a
    short line or a wider gap, or starts with a heading marker (``一、``, ``（一）``,
    ``1.``, ``第一章``); page numbers at the top or bottom of the page are dropped."""
    rows = _rows(lines)
    if not rows:
        return ""
    texts = [unicodedata.normalize("NFC", _join_boxes(r)) for r in rows]
    boxes = [(min(b.x0 for b in r), min(b.y0 for b in r), max(b.x1 for b in r), max(b.y1 for b in r)) for r in rows]
    bottom = page_height or max(b[3] for b in boxes)
    keep = []
    for i, (t, b) in enumerate(zip(texts, boxes)):
        edge = b[1] < 0.1 * bottom or b[3] > 0.9 * bottom or i in (0, len(texts) - 1)
        if edge and PAGE_NUMBER.match(t):
            continue
        keep.append(i)
    texts = [texts[i] for i in keep]
    boxes = [boxes[i] for i in keep]
    if not texts:
        return ""
    h = statistics.median(b[3] - b[1] for b in boxes) or 1.0
    # The text block's left and right edges: where most lines start and end.
    lefts = sorted(b[0] for b in boxes)
    rights = sorted(b[2] for b in boxes)
    left = lefts[len(lefts) // 5]
    right = rights[(len(rights) * 4) // 5]
    gaps = [boxes[i][1] - boxes[i - 1][3] for i in range(1, len(boxes))]
    usual_gap = statistics.median(gaps) if gaps else 0.0
    paragraphs: list[str] = [texts[0]]
    for i in range(1, len(texts)):
        prev_box, box, prev_text, text = boxes[i - 1], boxes[i], texts[i - 1], texts[i]
        gap = box[1] - prev_box[3]
        indented = box[0] - left > 1.0 * h
        short_before = right - prev_box[2] > 1.5 * h
        wide_gap = gap > max(usual_gap + 0.5 * h, 1.5 * usual_gap)
        # A heading marker at the start of a line after a finished sentence (a wrapped line
        # of running text may begin with "1." too, but not after a full stop).
        starts_heading = heading_match(text) is not None and prev_text.endswith(_SENTENCE_END)
        if indented or short_before or wide_gap or starts_heading:
            paragraphs.append(text)
        else:
            paragraphs[-1] = glue(paragraphs[-1], text)
    return "\n".join(paragraphs)
