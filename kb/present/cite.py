"""Citations in the styles people submit, and exports that reference managers import.

- ``short``: kb's compact form, with the section path (``作者（职务）. 《题名》. 来源, 日期. 章节：…``);
- ``gbt7714``: GB/T 7714-2015. Online documents (with a URL) as electronic resources,
  ``作者. 题名[EB/OL]. 出版者, (发布日期)[引用日期]. URL.``; others as ``[Z]`` (type unknown);
- ``apa``: APA 7, ``Author. (2024, July 11). Title. Site. URL``;
- ``bibtex`` / ``ris``: what Zotero, EndNote and NoteExpress import.

A missing field is left out with its punctuation, never printed as "None" or an empty
bracket. The section path is not part of GB/T or APA strings; it is the locator, kept on
the :class:`Reference` (and in BibTeX/RIS notes).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

STYLES = ("short", "gbt7714", "apa")
EXPORTS = ("bibtex", "ris")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True)
class Reference:
    """What a citation is made of: one document, and where in it."""

    title: str
    author: str = ""
    author_position: str = ""
    publisher: str = ""  # the 来源 line: the site or body that published it
    date: str = ""  # YYYY-MM-DD
    url: str = ""
    sections: tuple[str, ...] = ()  # the locator: heading path below the title
    path: str = ""  # file within the library
    key: str = ""  # the citation key (BibTeX key, RIS ID); empty: made from author, year and title
    place: str = ""  # page, slide or rows in the file: 第3页, 第3–4页, 第5张幻灯片, 第12–20行
    doc: str = ""  # the document's id: references to one document are one record in an export

    @classmethod
    def of(cls, title: str, meta: Mapping[str, str], heading_path: Sequence[str] = (), path: str = "",
           key: str = "", place: str = "", doc: str = "") -> Reference:
        return cls(title=title or "", author=meta.get("author", ""), author_position=meta.get("author_position", ""),
                   publisher=meta.get("source", ""), date=meta.get("date", ""), url=meta.get("url", ""),
                   sections=tuple(h for h in heading_path[1:] if h), path=path, key=key, place=place, doc=doc)

    @property
    def pages(self) -> str:
        """The page numbers of a page locator (``3`` or ``3-4``), for styles with a page field."""
        m = re.fullmatch(r"第(\d+)(?:–(\d+))?页", self.place)
        if not m:
            return ""
        return m.group(1) if not m.group(2) else f"{m.group(1)}-{m.group(2)}"

    @property
    def new_place(self) -> str:
        """The place, unless the section path already says it (a slide's heading names its number)."""
        return self.place if self.place and self.place not in self.locator else ""

    @property
    def locator(self) -> str:
        return " > ".join(self.sections)

    @property
    def year(self) -> str:
        return self.date[:4] if re.match(r"\d{4}", self.date) else ""


def cite(ref: Reference, style: str = "short", accessed: _dt.date | None = None) -> str:
    """``ref`` in ``style`` (one of :data:`STYLES`). ``accessed``: the citing date of online
    documents in GB/T 7714 (today by default)."""
    if style == "short":
        return short(ref)
    if style == "gbt7714":
        return gbt7714(ref, accessed)
    if style == "apa":
        return apa(ref)
    raise ValueError(f"unknown citation style {style!r} — use one of {', '.join(STYLES)}")


def short(ref: Reference) -> str:
    parts = []
    if ref.author:
        parts.append(f"{ref.author}（{ref.author_position}）" if ref.author_position else ref.author)
    parts.append(f"《{ref.title}》")
    where = ", ".join(x for x in (ref.publisher, ref.date) if x)
    if where:
        parts.append(where)
    if ref.sections:
        parts.append("章节：" + ref.locator)
    elif ref.path and not where:
        parts.append(ref.path)
    if ref.new_place:
        parts.append(ref.new_place)
    return ". ".join(parts) + "."


def gbt7714(ref: Reference, accessed: _dt.date | None = None) -> str:
    online = bool(ref.url)
    parts = [ref.author] if ref.author else []
    parts.append(f"{ref.title}[{'EB/OL' if online else 'Z'}]")
    dates = (f"({ref.date})" if ref.date and online else ref.date)
    if online:
        dates += f"[{(accessed or _dt.date.today()).isoformat()}]"
    publication = ", ".join(x for x in (ref.publisher, dates) if x)
    if ref.pages:  # GB/T 7714: the cited pages after the date, "出版者, 日期: 3-4."
        publication = f"{publication}: {ref.pages}" if publication else ref.pages
    if publication:
        parts.append(publication)
    if online:
        parts.append(ref.url)
    return ". ".join(parts) + "."


def apa(ref: Reference) -> str:
    when = "n.d."
    m = re.match(r"(\d{4})(?:-(\d{2})-(\d{2}))?", ref.date)
    if m:
        when = m.group(1) if not m.group(2) else f"{m.group(1)}, {_MONTHS[int(m.group(2)) - 1]} {int(m.group(3))}"
    title = _end(ref.title)
    head = [f"{_end(ref.author)} ({when}).", title] if ref.author else [title, f"({when})."]
    parts = head + ([_end(ref.publisher)] if ref.publisher and ref.publisher != ref.author else [])
    if ref.url:
        parts.append(ref.url)
    return " ".join(parts)


def _end(text: str) -> str:
    """A sentence of a reference ends with a period, unless it ends with ? or ! already."""
    return text if text.endswith((".", "?", "!", "。", "？", "！")) else text + "."


# --------------------------------------------------------------------------- exports


def export(refs: Iterable[Reference], fmt: str, accessed: _dt.date | None = None) -> str:
    if fmt == "bibtex":
        return bibtex(refs, accessed)
    if fmt == "ris":
        return ris(refs, accessed)
    raise ValueError(f"unknown export format {fmt!r} — use one of {', '.join(EXPORTS)}")


_BIB_SPECIAL = re.compile(r"([\\{}%&#$_^~])")


def _bib(value: str) -> str:
    value = " ".join(value.split())
    return _BIB_SPECIAL.sub(lambda m: "\\textbackslash{}" if m.group(1) == "\\" else "\\" + m.group(1), value)


_KEY_DROP = re.compile(r"[^0-9A-Za-z\u4e00-\u9fff\u3400-\u4dbf]+")


# how notices' titles begin, left out of a key as Better BibTeX leaves out "the" and "a"
_TITLE_OPENING = re.compile(r"^(?:关于(?:印发|转发|进一步)?|印发|转发)")


def citation_key(author: str, publisher: str, date: str, title: str) -> str:
    """A key as Better BibTeX makes them, author-year-title: ``董清河2024对生活失`` (the author,
    else the publisher; the year; the title's first four characters, or three words, after an
    opening like 关于印发), letters, digits and Chinese characters only. The same document gets
    the same key in every run; :meth:`kb.search.reader.Reader.cite_key` tells apart documents
    of one library that would share one."""
    author = author or publisher
    year = date[:4] if re.match(r"\d{4}", date) else ""
    words = [w for w in _KEY_DROP.split(title) if w]
    if words and all(w.isascii() for w in words):
        head = "".join(w.capitalize() for w in words[:3])
    else:
        joined = "".join(words)
        head = (_TITLE_OPENING.sub("", joined) or joined)[:4]
    return (_KEY_DROP.sub("", author)[:12] + year + head) or "kb"


def _key(ref: Reference) -> str:
    return _KEY_DROP.sub("", ref.key) or citation_key(ref.author, ref.publisher, ref.date, ref.title)



def _records(refs: Iterable[Reference]) -> Iterator[tuple[str, Reference, list[Reference], str]]:
    """One record per document (first seen first): its key, its reference, every reference to
    it, and their pages as one range."""
    groups: dict[str, tuple[Reference, list[Reference]]] = {}
    for ref in refs:
        ident = ref.doc or f"{ref.title}\x00{ref.path}\x00{ref.key}"
        if ident in groups:
            groups[ident][1].append(ref)
        else:
            groups[ident] = (ref, [ref])
    seen: set[str] = set()
    for ref, cited in groups.values():
        key, n = _key(ref), 2
        while key in seen:  # two documents given one key by the caller: kept apart, in order
            key, n = f"{_key(ref)}-{n}", n + 1
        seen.add(key)
        yield key, ref, cited, _pages(cited)


def _note(refs: list[Reference], paged: bool) -> str:
    """The cited places of one document: each section path with its page (unless the page is
    the record's own page field), once each."""
    places = []
    for r in refs:
        where = "章节：" + r.locator if r.sections else ""
        place = "" if paged else r.new_place
        item = f"{where}（{place}）" if where and place else where or place
        if item and item not in places:
            places.append(item)
    return "；".join(places)


def _pages(refs: list[Reference]) -> str:
    """The pages of a document's references as one range (``3-7``), when every one has a page."""
    spans = [r.pages for r in refs]
    if not all(spans):
        return ""
    numbers = [int(x) for span in spans for x in span.split("-")]
    lo, hi = min(numbers), max(numbers)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bibtex(refs: Iterable[Reference], accessed: _dt.date | None = None) -> str:
    entries = []
    for key, ref, cited, pages in _records(refs):
        fields = [("author", ref.author), ("title", ref.title), ("howpublished", ref.publisher),
                  ("year", ref.year), ("date", ref.date), ("url", ref.url),
                  ("urldate", (accessed or _dt.date.today()).isoformat() if ref.url else ""),
                  ("pages", pages.replace("-", "--")), ("note", _note(cited, bool(pages)))]
        body = "".join(f"  {name} = {{{value if name == 'url' else _bib(value)}}},\n"  # a URL is verbatim
                       for name, value in fields if value)
        entries.append(f"@misc{{{key},\n{body}}}\n")
    return "\n".join(entries)


def ris(refs: Iterable[Reference], accessed: _dt.date | None = None) -> str:
    records = []
    for key, ref, cited, pages in _records(refs):
        fields = [("TY", "ELEC" if ref.url else "GEN"), ("AU", ref.author), ("TI", ref.title), ("PB", ref.publisher),
                  ("PY", ref.year), ("DA", ref.date.replace("-", "/")), ("UR", ref.url),
                  ("Y2", (accessed or _dt.date.today()).isoformat().replace("-", "/") if ref.url else ""),
                  ("SP", pages.split("-")[0]), ("EP", pages.split("-")[-1] if "-" in pages else ""),
                  ("N1", _note(cited, bool(pages))), ("ID", key)]
        lines = [f"{tag}  - {' '.join(value.split())}" for tag, value in fields if value]
        records.append("\n".join(lines) + "\nER  - \n")
    return "\n".join(records)
