"""BM25, once for both stores: the IDF, the saturated term weight and the top-k of a score
array. The local store applies the weight to raw postings at query time; Milvus stores the
document side (``scale=1``) and multiplies by the IDF in its inner product. Every weight is
the same float32 expression of the same inputs, so a library scores the same wherever it
lives (up to Milvus' average length, frozen when a passage is written)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

K1 = 1.2  # term-frequency saturation
B = 0.75  # length normalisation


def query_terms(tokens: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """A query's distinct terms with their weights: tokens weigh 1 each; a mapping (a query
    widened by synonyms) gives each term its own weight."""
    if isinstance(tokens, Mapping):
        return {t: float(w) for t, w in tokens.items() if w > 0}
    return dict.fromkeys(tokens, 1.0)


def idf(n_docs: int, df: int) -> float:
    """Lucene's BM25 IDF (always positive)."""
    return float(np.log1p((n_docs - df + 0.5) / (df + 0.5)))


def weights(tf: np.ndarray, lengths: np.ndarray, avgdl: float, k1: float, b: float,
            scale: float = 1.0) -> np.ndarray:
    """``scale · tf·(k1+1) / (tf + k1·(1-b+b·length/avgdl))`` in float32, for postings with
    frequencies ``tf`` in rows of ``lengths`` tokens; ``scale`` is the term's IDF when the
    weight is the whole score, 1 for the document side alone."""
    norm = np.float32(k1) * (np.float32(1.0 - b) + np.float32(b) * np.asarray(lengths).astype(np.float32)
                             / np.float32(avgdl))
    return np.float32(scale) * tf * np.float32(k1 + 1.0) / (tf + norm)


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None,
          keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest positive scores, best first; equal scores in
    the order of ``keys`` (each row's passage-id hash; the row itself when None), also where
    the k-th place is shared: which of equal rows make the cut never depends on the rows
    around them (a filter, the segmentation, the store)."""
    idx = np.flatnonzero(scores > 0)  # only rows holding a query term: a fraction of the index
    if mask is not None:
        idx = idx[mask[idx]]
    k = min(k, len(idx))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    s = scores[idx]
    if k < len(idx):
        kth = np.partition(s, len(s) - k)[len(s) - k]  # the k-th largest: every row that equals it competes
        keep = s >= kth
        idx, s = idx[keep], s[keep]
    order = np.lexsort((idx if keys is None else keys[idx], -s))[:k]
    return idx[order].astype(np.int64), s[order]
