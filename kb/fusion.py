"""Ranking as pure functions over a frozen :class:`RankingConfig`: calibrating each
channel's scores to 0-1, and fusing them (convex combination, or RRF)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RankingConfig:
    """How hybrid search ranks (tuned on CMRC 2018, DRCD and DuReader; see README).
    Variants are made with ``dataclasses.replace``, never by mutating a searcher."""

    fusion: str = "convex"  # calibrated 0-1 scores, weighted sum; or "rrf"
    rrf_k: float = 60.0
    weights: Mapping[str, float] = field(default_factory=lambda: {"dense": 0.5, "lexical": 0.5})
    lexical_full_terms: int = 8  # keyword weight reaches its full value at this many query terms
    pool_min: int = 50  # candidates asked of each channel, at least
    bm25_k1: float = 1.2  # BM25 term-frequency saturation
    bm25_b: float = 0.75  # BM25 length normalisation


def channel_weights(config: RankingConfig, n_terms: int) -> tuple[float, float]:
    """Dense and keyword weights for a query with ``n_terms`` distinct indexed terms.

    A short query (``微信分享链接打开app``: 3-4 terms) matches every candidate on the same
    topic, so keyword overlap tells them apart poorly; a full question (8+ terms) shares
    specific words with the passage that answers it. Keyword weight therefore grows with
    the number of terms, reaching its full value at ``config.lexical_full_terms``."""
    wd, wl = config.weights["dense"], config.weights["lexical"]
    if config.lexical_full_terms:
        wl *= min(1.0, n_terms / config.lexical_full_terms)
    return wd, wl


def calibrate_dense(cosine: float, background: float) -> float:
    """A cosine measured from the query's background (an unrelated passage's cosine), 0-1."""
    return min(1.0, max(0.0, (cosine - background) / (1.0 - background)))


def calibrate_lexical(bm25: float, ceiling: float) -> float:
    """A BM25 score as a share of the highest score the query could reach, 0-1."""
    return min(1.0, bm25 / ceiling) if ceiling > 0 else 0.0


def fuse(config: RankingConfig, dense_of: Mapping[int, float], lex_of: Mapping[int, float],
         dense_run: Sequence[int], lexical_run: Sequence[int], n_terms: int) -> dict[int, float]:
    """Hybrid scores of the candidates: ``convex`` weighs the calibrated channel scores;
    ``rrf`` fuses the two runs' ranks (scaled to 0-1)."""
    if config.fusion == "rrf":
        runs = {"dense": list(dense_run), "lexical": list(lexical_run)}
        parts = rrf(runs, k=config.rrf_k, weights=config.weights)
        top = rrf_max(list(runs), k=config.rrf_k, weights=config.weights)
        return {r: sum(c.values()) / top for r, c in parts.items()}
    wd, wl = channel_weights(config, n_terms)
    total = wd + wl
    return {r: (wd * dense_of[r] + wl * lex_of[r]) / total for r in lex_of}


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
