"""New-word discovery: the multi-character terms of a library that jieba cuts apart, found
from the text alone (no model) — what ``kb words suggest`` lists for the user dictionary.

A candidate is a run of 2-6 Chinese characters that occurs often (``min_count``), holds
together (cohesion: the least pointwise mutual information over the ways to split it, so
every part predicts the others) and is free at both ends (boundary entropy: many different
characters come before and after it, so it is not a piece of a longer word). Candidates jieba
already keeps whole, or that a longer candidate explains (it occurs nearly only inside it),
are left out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")


@dataclass
class Suggestion:
    word: str
    count: int
    cohesion: float  # the least PMI over its splits, nats
    freedom: float  # the smaller of its left and right boundary entropies, nats
    example: str = ""  # a passage id where it occurs (filled by the caller)

    @property
    def score(self) -> float:
        return math.log(self.count) * self.cohesion * self.freedom

    def to_dict(self) -> dict:
        return {"word": self.word, "count": self.count, "cohesion": round(self.cohesion, 2),
                "freedom": round(self.freedom, 2), "example": self.example}


def _entropy(c: Counter) -> float:
    total = sum(c.values())
    return -sum(n / total * math.log(n / total) for n in c.values()) if total else 0.0


def discover(texts: Iterable[str], known, min_count: int = 5, max_len: int = 6, min_cohesion: float = 3.0,
             min_freedom: float = 1.0, limit: int = 50, max_chars: int = 3_000_000) -> list[Suggestion]:
    """The best ``limit`` new words of ``texts`` (read up to ``max_chars`` characters).
    ``known(word)`` says whether the tokenizer already keeps a word whole."""
    runs: list[str] = []
    read = 0
    for text in texts:
        for m in _RUN.finditer(text):
            runs.append(m.group())
            read += len(runs[-1])
        if read >= max_chars:
            break
    counts: Counter[str] = Counter()
    for run in runs:
        n = len(run)
        for i in range(n):
            for L in range(1, min(max_len, n - i) + 1):
                counts[run[i:i + L]] += 1
    total = sum(v for k, v in counts.items() if len(k) == 1) or 1
    candidates = {w for w, c in counts.items() if len(w) >= 2 and c >= min_count}
    cohesion: dict[str, float] = {}
    for w in candidates:
        pw = counts[w] / total
        cohesion[w] = min(math.log(pw / (counts[w[:i]] / total * counts[w[i:]] / total)) for i in range(1, len(w)))
    candidates = {w for w in candidates if cohesion[w] >= min_cohesion}
    left: dict[str, Counter] = {w: Counter() for w in candidates}
    right: dict[str, Counter] = {w: Counter() for w in candidates}
    for run in runs:
        n = len(run)
        padded = "^" + run + "$"
        for i in range(n):
            for L in range(2, min(max_len, n - i) + 1):
                w = run[i:i + L]
                if w in left:
                    left[w][padded[i]] += 1
                    right[w][padded[i + L + 1]] += 1
    found = []
    for w in candidates:
        freedom = min(_entropy(left[w]), _entropy(right[w]))
        if freedom < min_freedom or known(w):
            continue
        found.append(Suggestion(w, counts[w], cohesion[w], freedom))
    found.sort(key=lambda s: (-s.score, s.word))
    kept: list[Suggestion] = []
    for s in found:  # a piece of a better word that nearly always comes inside it is that word's
        if any(s.word in k.word and s.count <= 1.2 * k.count for k in kept):
            continue
        kept.append(s)
        if len(kept) >= limit:
            break
    return kept
