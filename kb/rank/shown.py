"""The score a hit shows (相关度): the learned model's probability of relevance, re-calibrated on
several kinds of library so that a shown 0.8 is right about 80 % of the time on each.

The model's own logistic (fitted on the shared sets' candidates) judges each candidate alone, by
absolute levels that differ from one library to another: on a small single-topic library the
right passage scores low, on a large web library many wrong ones score high. What transfers is
also how far a hit stands from the others: the top hit's lead over the second, another hit's
distance below the top. The shown score is therefore

    p = logistic(a * t + g * clip(t - t_other, -MARGIN, MARGIN) + b)

where ``t`` is the model's logit of the hit, ``t_other`` that of the best *other* hit shown, and
``(a, g, b)`` are fitted (``benchmarks/calibration.py --fit``, written to
``kb/data/shown.json``) on the three shared sets, the sample with the seed questions and a library
of real manuals with its questions, each library weighing the same, together with off-topic
questions (one library's questions asked of another, every hit wrong). The transform keeps the
order of the hits. It is used only with the model it was fitted for (the file records its
fingerprint); with another model the model's own probability is shown.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHOWN_PATH = Path(__file__).resolve().parent.parent / "data" / "shown.json"
MARGIN = 5.0  # a lead (or a gap) counts up to this many logits
# A question whose best hit shows less than this is flagged "没有足够相关的段落" as well (with the
# support and dense floors of kb.search.searcher): measured by benchmarks/calibration.py.
SHOWN_FLOOR = 0.3


def fingerprint(model_json: dict) -> str:
    """What identifies a fusion model's arithmetic: the hash of its features, weights and calibration."""
    core = {k: model_json[k] for k in ("features", "mean", "scale", "weights", "calibration")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ShownCalibration:
    a: float
    g: float
    b: float
    model: str  # the fingerprint of the fusion model it was fitted for

    def scores(self, logits: list[float]) -> list[float]:
        """The shown score of each hit, from the model's logits of the hits shown (best first)."""
        return [0.5 * (1.0 + math.tanh(0.5 * (self.a * t + self.g * lead + self.b)))  # the logistic
                for t, lead in zip(logits, leads(logits))]

    def to_json(self, info: dict | None = None) -> dict:
        return {"format": 1, "a": round(self.a, 6), "g": round(self.g, 6), "b": round(self.b, 6),
                "model": self.model, "info": info or {}}


def leads(logits: list[float]) -> list[float]:
    """How far each hit stands from the best *other* hit (the top hit: its lead over the second),
    clipped at ±MARGIN; 0 for a hit shown alone."""
    if len(logits) < 2:
        return [0.0] * len(logits)
    first = max(range(len(logits)), key=logits.__getitem__)
    second = max(t for i, t in enumerate(logits) if i != first)
    return [max(-MARGIN, min(MARGIN, t - (second if i == first else logits[first]))) for i, t in enumerate(logits)]


@lru_cache(maxsize=4)
def shown_calibration(model_fingerprint: str, path: str | None = None) -> ShownCalibration | None:
    """The calibration of ``kb/data/shown.json`` when it was fitted for this model, else None."""
    where = Path(path) if path else SHOWN_PATH
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != 1 or data.get("model") != model_fingerprint:
        return None
    return ShownCalibration(float(data["a"]), float(data["g"]), float(data["b"]), model_fingerprint)


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))
