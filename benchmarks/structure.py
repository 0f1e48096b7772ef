"""How much of each file's own structure survives into kb's passages, per format.

    python benchmarks/structure.py LIBRARY        # e.g. the folder benchmarks/manuals.py builds

Reads and splits every file of LIBRARY with kb's readers and splitter (no embedding) and compares
the passages with the files' own markup:

- ``heading_recall``: headings of the markup (HTML/EPUB ``h1``–``h6``, PDF outline entries, DOCX
  heading styles; for a ``.txt`` with a PDF of the same name beside it, that PDF's outline) found
  as a component of some passage's section path (numbering and spacing aside);
- ``heading_precision``: section-path components (the document title aside) that are headings of
  the markup — for formats that have markup;
- ``p_whole``: ``<p>`` paragraphs (20–400 characters) that lie whole inside one passage;
- ``code_lines``: lines of ``<pre>`` blocks found in some passage's text;
- ``median_chars``: median passage length; ``mid_sentence``: share of passages that start in the
  middle of a sentence (the text before them, in the same section, ends no sentence).

Prints one JSON line: the figures per format and over all files.
"""

from __future__ import annotations

import io
import json
import re
import statistics
import sys
import unicodedata
import zipfile
from pathlib import Path

from kb.errors import DocumentError
from kb.read.documents import DEFAULT_READ, SUPPORTED_SUFFIXES, parse_document
from kb.split.passages import split_document

_SPACE = re.compile(r"\s+")
_NUMBERING = re.compile(r"^(?:第\s*[\d一二三四五六七八九十百]+\s*[章节部分篇]|(?:[\dA-Za-z]{1,3}[.．])+\d*|"
                        r"[\dA-Z]{1,2}(?=\s))\s*")
_SENTENCE_END = set("。！？!?；;：:.」』”’）)]】")


def squash(text: str) -> str:
    return _SPACE.sub("", unicodedata.normalize("NFKC", text)).lower()


def heading_key(text: str) -> str:
    """A heading as compared: NFKC, no spaces, without its numbering (``2.7.``, ``第 2 章``)."""
    text = unicodedata.normalize("NFKC", text).strip()
    return squash(_NUMBERING.sub("", text)) or squash(text)


def _html_markup(html: bytes) -> dict[str, list[str]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer"]):
        tag.decompose()
    heads = [h.get_text(" ", strip=True) for h in soup.find_all(re.compile(r"^h[1-6]$"))]
    paras = [p.get_text("", strip=False) for p in soup.find_all("p")]
    paras = [" ".join(p.split()) for p in paras]
    code = [ln for pre in soup.find_all("pre") for ln in pre.get_text().split("\n") if ln.strip()]
    return {"headings": [h for h in heads if h], "paragraphs": [p for p in paras if 20 <= len(p) <= 400],
            "code": code}


def _pdf_markup(raw: bytes) -> dict[str, list[str]]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(raw))
    titles: list[str] = []

    def walk(items) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item)
            elif getattr(item, "title", None):
                titles.append(str(item.title))
    try:
        walk(reader.outline)
    except Exception:  # a broken outline is no outline
        pass
    return {"headings": titles, "paragraphs": [], "code": []}


def _epub_markup(raw: bytes) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"headings": [], "paragraphs": [], "code": []}
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        for name in z.namelist():
            if name.endswith((".xhtml", ".html")) and not name.endswith("nav.xhtml"):
                for key, values in _html_markup(z.read(name)).items():
                    found[key].extend(values)
    return found


def _docx_markup(raw: bytes) -> dict[str, list[str]]:
    import docx

    d = docx.Document(io.BytesIO(raw))
    heads = [p.text for p in d.paragraphs if p.style is not None and (p.style.name or "").startswith(("Heading",
                                                                                                      "Title"))]
    paras = [p.text for p in d.paragraphs if 20 <= len(p.text) <= 400 and p not in heads]
    return {"headings": [h for h in heads if h.strip()], "paragraphs": paras, "code": []}


MARKUP = {".html": _html_markup, ".htm": _html_markup, ".pdf": _pdf_markup, ".epub": _epub_markup,
          ".docx": _docx_markup}


def _mid_sentence(doc, passages) -> tuple[int, int]:
    """(passages starting mid-sentence, passages looked at): a top-level passage whose section is
    the previous one's and whose preceding text ends no sentence."""
    mid = seen = 0
    prev_path = None
    for p in passages:
        if p.parent is not None or p.kind == "header":
            continue
        if prev_path == p.heading_path:
            seen += 1
            before = doc.text[:p.start].rstrip()
            if before and before[-1] not in _SENTENCE_END:
                mid += 1
        prev_path = p.heading_path
    return mid, seen


def measure(library: Path) -> dict:
    per: dict[str, dict] = {}
    for path in sorted(library.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        fmt = path.suffix.lower().lstrip(".")
        row = per.setdefault(fmt, {"files": 0, "refused": 0, "passages": 0, "lengths": [], "headings": 0,
                                   "headings_found": 0, "components": 0, "components_real": 0,
                                   "paragraphs": 0, "paragraphs_whole": 0, "code": 0, "code_kept": 0,
                                   "mid": 0, "mid_seen": 0})
        row["files"] += 1
        raw = path.read_bytes()
        try:
            doc = parse_document(raw, str(path.relative_to(library)), opts=DEFAULT_READ)
        except DocumentError:
            row["refused"] += 1
            continue
        passages = split_document(doc)
        row["passages"] += len(passages)
        row["lengths"].extend(len(p.text) for p in passages)
        mid, seen = _mid_sentence(doc, passages)
        row["mid"] += mid
        row["mid_seen"] += seen
        reader = MARKUP.get(path.suffix.lower())
        twin = path.with_suffix(".pdf")
        if reader is None and path.suffix.lower() == ".txt" and twin.is_file():
            markup = _pdf_markup(twin.read_bytes())  # a manual's text export: its PDF's outline has the headings
        elif reader is None:
            continue
        else:
            markup = reader(raw)
        components = {c for p in passages for c in p.heading_path[1:]}
        found = {heading_key(c) for p in passages for c in p.heading_path} | {heading_key(doc.title)}
        marked = {heading_key(h) for h in markup["headings"]}
        if marked:
            row["headings"] += len(marked)
            row["headings_found"] += len(marked & found)
            row["components"] += len(components)
            row["components_real"] += sum(heading_key(c) in marked for c in components)
        texts = [squash(p.text) for p in passages]
        for para in markup["paragraphs"]:
            key = squash(para)
            row["paragraphs"] += 1
            row["paragraphs_whole"] += any(key in t for t in texts)
        joined = "\n".join(texts)
        for line in markup["code"]:
            row["code"] += 1
            row["code_kept"] += squash(line) in joined
    out: dict[str, dict] = {}
    total: dict[str, float] = {}
    for fmt, row in per.items():
        for key, value in row.items():
            if key != "lengths":
                total[key] = total.get(key, 0) + value
        out[fmt] = _figures(row, row["lengths"])
    lengths = [n for row in per.values() for n in row["lengths"]]
    out["all"] = _figures(total, lengths)
    return out


def _share(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _figures(row: dict, lengths: list[int]) -> dict:
    return {"files": row["files"], "refused": row["refused"], "passages": row["passages"],
            "heading_recall": _share(row["headings_found"], row["headings"]),
            "heading_precision": _share(row["components_real"], row["components"]),
            "p_whole": _share(row["paragraphs_whole"], row["paragraphs"]),
            "code_lines": _share(row["code_kept"], row["code"]),
            "median_chars": statistics.median(lengths) if lengths else None,
            "mid_sentence": _share(row["mid"], row["mid_seen"])}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/structure.py LIBRARY")
    print(json.dumps({"library": sys.argv[1], "formats": measure(Path(sys.argv[1]))}, ensure_ascii=False))


if __name__ == "__main__":
    main()
