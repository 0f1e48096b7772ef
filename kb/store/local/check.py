"""`kb check` on an index folder: every file of the live generation read and compared with the
checksum written with it, without stopping at the first problem, and what `kb index --rebuild`
will then do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kb.errors import IndexNotFound, KBError
from kb.store.local.layout import IndexDir, read_manifest
from kb.store.local.segments import SegmentReader, load_deleted


def check_index(location: str | Path) -> dict[str, Any]:
    """``{"index", "generation", "segments": [{name, passages, ok, problem}], "problems",
    "passages_to_embed"}`` for the index folder at ``location``."""
    idx = IndexDir(location)
    gen = idx.current()
    if gen is None:
        raise IndexNotFound(f"no index at {idx.root}/ — run `kb index FOLDER` first")
    out: dict[str, Any] = {"index": str(idx.root), "generation": gen.name, "segments": [], "problems": [],
                           "passages_to_embed": 0}
    try:
        named = idx.current_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = None
    if named != gen.name:
        out["problems"].append(f"CURRENT is damaged; {gen.name} is the newest intact generation "
                               "(the next `kb index` repairs CURRENT)")
    try:
        manifest = read_manifest(gen)
    except KBError as e:
        out["problems"].append(str(e))
        return out
    for entry in manifest["segments"]:
        live = int(entry["rows"]) - int(entry.get("deleted_rows", 0))
        row = {"name": entry["name"], "passages": live, "ok": True, "problem": ""}
        seg = None
        try:
            load_deleted(gen, entry)
            seg = SegmentReader(idx.segments_dir / entry["name"])  # its own reader: verified now
            seg.open_all()
        except KBError as e:
            row.update(ok=False, problem=str(e))
            out["problems"].append(str(e))
            out["passages_to_embed"] += live
        finally:
            if seg is not None:
                seg.close()
        out["segments"].append(row)
    return out
