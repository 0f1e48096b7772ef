"""The sub-point/paragraph family rule: a passage and its ancestor are never listed
together, and one document's repeated text is listed once (pure)."""

from __future__ import annotations

from typing import Any

from kb.records import CONTENTS_KIND


def dedupe_families(ranked: list[int], rows: dict[int, dict[str, Any]], ancestors: dict[str, list[str]],
                    fused: dict[int, float], k: int,
                    evidence: dict[int, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """Walk candidates best first; a passage and its ancestor are never both listed.

    When a paragraph follows one of its own sub-points, it only becomes context. When a
    sub-point follows its paragraph, it takes the paragraph's place (and rank) if it holds
    the match: at least 80% of the paragraph's keyword score, or, with no keyword match,
    a dense score as good. Otherwise the sub-point is an unrelated part of a paragraph
    that matched elsewhere, and is dropped in favour of the paragraph."""
    shown: list[dict[str, Any]] = []
    for row in ranked:
        pid = rows[row]["id"]
        anc = set(ancestors.get(pid, []))
        covered = False
        for entry in shown:
            if pid in entry["ancestors"]:  # an ancestor of something listed
                if pid not in entry["context"]:
                    entry["context"].append(pid)
                covered = True
                break
            if entry["id"] in anc:  # more specific than something listed
                if _holds_match(evidence, row, entry["row"]):
                    entry["context"].append(entry["id"])
                    entry.update(row=row, id=pid, ancestors=anc)
                covered = True
                break
        if covered or len(shown) >= k:
            continue
        shown.append({"row": row, "id": pid, "ancestors": anc, "score": fused[row], "context": []})
    return shown


def drop_repeats(ranked: list[int], rows: dict[int, dict[str, Any]]) -> list[int]:
    """Web pages repeat paragraphs: list the same text of one document once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for r in ranked:
        key = (rows[r]["doc_id"], rows[r]["text"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def contents_last(ranked: list[int], rows: dict[int, dict[str, Any]]) -> list[int]:
    """Tables of contents after every other passage: they list the sections that answer."""
    return sorted(ranked, key=lambda r: rows[r]["kind"] == CONTENTS_KIND)


def _holds_match(evidence: dict[int, tuple[float, float]] | None, child: int, parent: int) -> bool:
    if evidence is None:
        return True
    lex_c, dense_c = evidence.get(child, (0.0, 0.0))
    lex_p, dense_p = evidence.get(parent, (0.0, 0.0))
    if lex_p > 0:
        return lex_c >= 0.8 * lex_p
    return dense_c >= dense_p
