"""atheris fuzz targets: every path by which outside bytes or text enter kb.

    python fuzz/targets.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET: decode, txt, md, html, docx, pdf, pptx, xlsx, epub, png, jpg, tiff, split, query. A target fails on
any exception other than kb's own one-line errors (KBError): each such crash is a bug, to be fixed and
kept as a regression test (tests/test_security.py, tests/fixtures/fuzz/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from kb.errors import KBError
    from kb.read.documents import decode_bytes, parse_document
    from kb.search.searcher import bound_query
    from kb.split.passages import split_document
    from kb.text.process import fold, normalize, tokenize


def read_as(suffix: str):
    def target(data: bytes) -> None:
        try:
            doc = parse_document(data, f"fuzz{suffix}")
        except KBError:
            return
        split_document(doc)

    return target


def decode(data: bytes) -> None:
    try:
        text, _, _ = decode_bytes(data, "fuzz")
    except KBError:
        return
    normalize(text)


def split(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    try:
        doc = parse_document(text.encode("utf-8"), "fuzz.txt")
    except KBError:
        return
    passages = split_document(doc, max_chars=120)
    for p in passages:
        assert 0 <= p.start <= p.end <= len(doc.text), (p.start, p.end, len(doc.text))


def query(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(4 * len(data))
    q, _ = bound_query(text)
    assert len(q) <= 512
    tokenize(q)
    fold(q)


TARGETS = {"decode": decode, "txt": read_as(".txt"), "md": read_as(".md"), "html": read_as(".html"),
           "docx": read_as(".docx"), "pdf": read_as(".pdf"), "pptx": read_as(".pptx"), "xlsx": read_as(".xlsx"),
           "epub": read_as(".epub"), "png": read_as(".png"), "jpg": read_as(".jpg"), "tiff": read_as(".tiff"),
           "split": split, "query": query}

if __name__ == "__main__":
    name = sys.argv.pop(1)
    tokenize("预热")  # jieba's dictionary outside the timed inputs
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()
