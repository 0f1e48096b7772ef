"""Pure rank and score fusion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rrf(runs: Mapping[str, Sequence[int]], k: float = 60.0,
        weights: Mapping[str, float] | None = None) -> dict[int, dict[str, float]]:
    """Weighted reciprocal rank fusion. ``runs`` maps a channel name to item ids, best
    first. Returns ``{item: {channel: contribution}}``; an item's fused score is the sum
    of its contributions ``w / (k + rank)`` (rank from 1)."""
    out: dict[int, dict[str, float]] = {}
    for name, items in runs.items():
        w = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, item in enumerate(items, start=1):
            out.setdefault(item, {})[name] = w / (k + rank)
    return out


def rrf_max(channels: Sequence[str], k: float = 60.0, weights: Mapping[str, float] | None = None) -> float:
    """The fused score of an item ranked first in every channel: divides scores into 0-1."""
    return sum((1.0 if weights is None else weights.get(c, 1.0)) / (k + 1) for c in channels)


def min_max(values: Sequence[float]) -> list[float]:
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return [1.0 if hi > 0 else 0.0 for _ in values]
    return [(v - lo) / (hi - lo) for v in values]
