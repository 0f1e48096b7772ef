"""Ranking as pure functions over a frozen :class:`RankingConfig`: calibrating each
channel's scores to 0-1, describing each candidate by features, and fusing them
(the learned model shipped in ``kb/data/fusion.json``, a convex combination, or RRF)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from kb.rank.shown import fingerprint
from kb.store import bm25

MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "fusion.json"


@dataclass(frozen=True)
class RankingConfig:
    """How hybrid search ranks (tuned on CMRC 2018, DRCD and DuReader; see README).
    Variants are made with ``dataclasses.replace``, never by mutating a searcher."""

    fusion: str = "learned"  # the shipped model over candidate features; "convex" (weighted sum); "rrf"
    model: str | None = None  # a fusion model file (``kb.learn`` writes one); None: the shipped one
    shown: bool = True  # show the learned model's probability re-calibrated across libraries (kb.rank.shown)
    rrf_k: float = 60.0
    weights: Mapping[str, float] = field(default_factory=lambda: {"dense": 0.5, "lexical": 0.5})
    lexical_full_terms: int = 8  # keyword weight reaches its full value at this many query terms
    pool_min: int = 50  # candidates asked of each channel, at least
    bm25_k1: float = bm25.K1  # BM25 term-frequency saturation
    bm25_b: float = bm25.B  # BM25 length normalisation
    # related passages (kb related, the page's 相关段落): measured on DRCD's articles (README)
    related_terms: int = 20  # the passage's most telling words, its keyword query
    related_lexical: float = 0.3  # keyword share of the score (the rest: calibrated cosine)
    related_title: float = 0.1  # bonus for a document title sharing words with the passage's


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


def telling_terms(tokens: Sequence[str], title: set[str], idf, n: int) -> list[str]:
    """A passage's ``n`` most telling words, by frequency x IDF (its title's words count
    double): the keyword query that finds passages sharing its subject."""
    tf: dict[str, int] = {}
    for t in tokens:
        tf[t] = tf.get(t, 0) + 1
    weight = {t: c * idf(t) * (2.0 if t in title else 1.0) for t, c in tf.items()}
    return sorted((t for t in weight if weight[t] > 0), key=lambda t: (-weight[t], t))[:n]


def related_scores(config: RankingConfig, dense: Sequence[float], lexical: Sequence[float],
                   title_share: Sequence[float]) -> np.ndarray:
    """Scores of related-passage candidates, 0-1: the calibrated cosine to the passage and
    the BM25 of its telling words as a share of the passage's own score, weighed by
    ``related_lexical``, plus ``related_title`` x the share of the passage's title words in
    the candidate's title. The title bonus is small: a passage of another document that is
    much closer still wins, so related passages are not "the same document only"."""
    w, bonus = config.related_lexical, config.related_title
    d, lex = np.asarray(dense, dtype=np.float64), np.asarray(lexical, dtype=np.float64)
    return ((1 - w) * d + w * lex + bonus * np.asarray(title_share, dtype=np.float64)) / (1 + bonus)


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


# --------------------------------------------------------------------------- learned fusion


def _pairs(word: str) -> set[str]:
    return {word} if len(word) < 2 else {word[i: i + 2] for i in range(len(word) - 1)}


def support(weights: Mapping[str, float], text: str) -> float:
    """The IDF-weighted share of the query words found in ``text`` (folded): each word
    counts by the share of its character pairs that occur in the text, so that jieba
    cutting a phrase differently in the question and in the text does not matter."""
    return Cover(weights)(text)


class Cover:
    """:func:`support` for one query, its words' character pairs worked out once, to be
    applied to many texts."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        total = sum(weights.values())
        self.parts = [(w / total / len(p), tuple(p)) for word, w in weights.items() if w
                      for p in (sorted(_pairs(word)),)] if total > 0 else []

    def __call__(self, text: str) -> float:
        found = 0.0
        for share, pairs in self.parts:
            for p in pairs:
                if p in text:
                    found += share
        return found


@dataclass
class Pool:
    """One query's candidates (the union of both channels' top rows), as aligned arrays."""

    n_terms: int  # distinct query words the index has
    dense: np.ndarray  # calibrated cosine, 0-1
    lexical: np.ndarray  # calibrated BM25, 0-1
    dense_rank: np.ndarray  # rank in the dense run from 1; 0 when the channel did not return it
    lexical_rank: np.ndarray
    cover: np.ndarray  # support() of the heading path and text
    head_cover: np.ndarray  # support() of the heading path (title first) alone
    length: np.ndarray  # characters of text
    sub: np.ndarray  # 1.0 for a part of a paragraph (sub-point or chunk), else 0.0
    doc: Sequence[str]  # document id of each candidate
    family: Sequence[tuple[str, str | None]]  # (passage id, parent id)


FEATURES = (
    "dense", "lexical", "lexical_ramped", "dense_x_lexical", "convex",
    "dense_rank", "lexical_rank", "dense_only", "lexical_only",
    "cover", "cover_ramped", "head_cover", "log_length", "sub",
    "doc_hits", "doc_best_other", "family_best",
    # within the query: each channel's scores standardised over its candidates, and gated by how far
    # the two channels agree on the query's top 10 (a per-query weighting a linear model can learn)
    "dense_z", "lexical_z", "dense_z_x_agree", "lexical_z_x_agree",
)
AGREE_TOP = 10


def _standardised(a: np.ndarray) -> np.ndarray:
    sd = float(a.std())
    return (a - a.mean()) / sd if sd > 1e-9 else np.zeros_like(a)


ABSENT_RANK = 200  # the rank feature of a candidate its channel did not return


def _ranks(ranks: np.ndarray) -> np.ndarray:
    return np.log1p(np.where(ranks > 0, ranks, ABSENT_RANK).astype(np.float64))


def features(pool: Pool, config: RankingConfig) -> np.ndarray:
    """The candidates' feature matrix, columns in :data:`FEATURES` order. The keyword
    channel and word cover are also given "ramped" by the query's length in words (see
    :func:`channel_weights`); a candidate learns from the rest of its document
    (``doc_*``) and from its parent or sub-points (``family_best``)."""
    n = len(pool.dense)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    d, lex, cover = (np.asarray(a, dtype=np.float64) for a in (pool.dense, pool.lexical, pool.cover))
    wd, wl = channel_weights(config, pool.n_terms)
    ramp = wl / config.weights["lexical"] if config.weights["lexical"] else 0.0
    convex = (wd * d + wl * lex) / (wd + wl) if wd + wl else d
    doc_of = list(pool.doc)
    by_doc: dict[str, list[int]] = {}
    for i, doc in enumerate(doc_of):
        by_doc.setdefault(doc, []).append(i)
    doc_hits = np.array([math.log(len(by_doc[doc])) for doc in doc_of])
    doc_best_other = np.zeros(n)
    for members in by_doc.values():
        if len(members) > 1:
            vals = convex[members]
            order = np.argsort(-vals)
            best, second = vals[order[0]], vals[order[1]]
            for i in members:
                doc_best_other[i] = second if i == members[order[0]] else best
    where = {pid: i for i, (pid, _) in enumerate(pool.family)}
    family_best = np.zeros(n)
    for i, (_, parent) in enumerate(pool.family):
        j = where.get(parent) if parent else None
        if j is not None:
            family_best[i] = max(family_best[i], convex[j])
            family_best[j] = max(family_best[j], convex[i])
    dr, lr = np.asarray(pool.dense_rank), np.asarray(pool.lexical_rank)
    top_d, top_l = (dr > 0) & (dr <= AGREE_TOP), (lr > 0) & (lr <= AGREE_TOP)
    agree = float((top_d & top_l).sum()) / AGREE_TOP
    dz, lz = _standardised(d), _standardised(lex)
    cols = [
        d, lex, lex * ramp, d * lex, convex, _ranks(dr), _ranks(lr), ((dr > 0) & (lr == 0)).astype(float),
        ((lr > 0) & (dr == 0)).astype(float),
        cover, cover * ramp, np.asarray(pool.head_cover, dtype=np.float64),
        np.log1p(np.asarray(pool.length, dtype=np.float64)), np.asarray(pool.sub, dtype=np.float64),
        doc_hits, doc_best_other, family_best,
        dz, lz, dz * agree, lz * agree,
    ]
    return np.column_stack(cols)


@dataclass(frozen=True)
class FusionModel:
    """A linear model over standardised :data:`FEATURES` (trained by ``kb.learn``, listwise:
    the right passage should win its query's softmax), with a logistic calibration that
    turns its score into a 0-1 probability of relevance for display and ``--min-score``."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    calibration: tuple[float, float]
    info: Mapping[str, object] = field(default_factory=dict)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The model's score of each row of ``x`` (all of :data:`FEATURES`; it reads its own columns)."""
        if self.features != FEATURES:
            x = x[:, [FEATURES.index(f) for f in self.features]]
        return ((x - self.mean) / self.scale) @ self.weights

    def score(self, x: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return 0.5 * (1.0 + np.tanh(0.5 * (a * self.raw(x) + b)))  # the logistic, without overflow

    @cached_property
    def fingerprint(self) -> str:
        """What identifies this model's arithmetic (:func:`kb.rank.shown.fingerprint`)."""
        return fingerprint(self.to_json())

    def to_json(self) -> dict[str, object]:
        return {"format": 1, "features": list(self.features), "mean": self.mean.round(6).tolist(),
                "scale": self.scale.round(6).tolist(), "weights": self.weights.round(6).tolist(),
                "calibration": [round(float(c), 6) for c in self.calibration], "info": dict(self.info)}

    def save(self, path: str | Path) -> None:
        """Write the model as the JSON file :func:`load_model` reads (stable bytes for equal models)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, data: Mapping[str, object], where: str = "fusion model") -> FusionModel:
        from kb.errors import KBError

        names = tuple(data.get("features", ()))
        if data.get("format") != 1 or not names or not set(names) <= set(FEATURES):
            raise KBError(f"{where} was trained for other features than this kb computes — retrain it "
                          "with `python -m kb.learn` (see README, Ranking)")
        arr = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "weights")}
        if any(len(a) != len(names) for a in arr.values()):
            raise KBError(f"{where}: {len(names)} features but weights of another length — retrain it")
        return cls(names, arr["mean"], arr["scale"], arr["weights"],
                   tuple(float(c) for c in data["calibration"]), data.get("info") or {})


@lru_cache(maxsize=8)
def load_model(path: str | None = None) -> FusionModel:
    """The fusion model at ``path`` (the shipped one when None), read once per process."""
    from kb.errors import KBError

    path = path or os.environ.get("KB_FUSION_MODEL")
    where = Path(path) if path else MODEL_PATH
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KBError(f"cannot read the fusion model {where}: {e}") from e
    return FusionModel.from_json(data, str(where))


def learned_scores(config: RankingConfig, pool: Pool) -> np.ndarray:
    """The learned model's 0-1 score of each candidate."""
    return load_model(config.model).score(features(pool, config))


# --------------------------------------------------------------------------- the fusions, by name


@dataclass
class Candidates:
    """A query's candidate rows (dense run first, then keyword-only ones) and their scores."""

    rows: list[int]
    records: dict[int, dict]
    dense_run: list[int]  # best first
    lexical_run: list[int]
    cosine: dict[int, float]
    dense: dict[int, float]  # calibrated, 0-1
    bm25: dict[int, float]
    lexical: dict[int, float]  # calibrated, 0-1


# A fusion: (config, candidates, the query's distinct indexed terms, the candidates' Pool on
# demand) -> (each ranked candidate's shown score, the key it is ranked by, best first).
Fusion = Callable[[RankingConfig, Candidates, int, Callable[[], Pool]], tuple[dict[int, float], dict[int, float]]]


def _dense_only(config: RankingConfig, c: Candidates, n_terms: int, pool) -> tuple[dict, dict]:
    return {r: c.dense[r] for r in c.rows}, {r: c.cosine[r] for r in c.rows}


def _lexical_only(config: RankingConfig, c: Candidates, n_terms: int, pool) -> tuple[dict, dict]:
    return {r: c.lexical[r] for r in c.lexical_run}, {r: c.bm25[r] for r in c.lexical_run}


def _learned(config: RankingConfig, c: Candidates, n_terms: int, pool) -> tuple[dict, dict]:
    fused = dict(zip(c.rows, learned_scores(config, pool()).tolist()))
    return fused, fused


def _weighted(config: RankingConfig, c: Candidates, n_terms: int, pool) -> tuple[dict, dict]:
    fused = fuse(config, c.dense, c.lexical, c.dense_run, c.lexical_run, n_terms)
    return fused, fused


FUSIONS: dict[str, Fusion] = {
    "dense": _dense_only,  # the dense channel alone, ranked by cosine
    "lexical": _lexical_only,  # BM25 alone, over the keyword run
    "learned": _learned,  # the shipped model (RankingConfig.fusion's default)
    "convex": _weighted,  # weighted sum of the calibrated channels
    "rrf": _weighted,  # reciprocal rank fusion
}


def fusion_for(mode: str, config: RankingConfig) -> Fusion:
    """The fusion a search ``mode`` uses: its own channel, or the config's for ``hybrid``."""
    name = config.fusion if mode == "hybrid" else mode
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r} — one of {', '.join(FUSIONS)}")
    return FUSIONS[name]
