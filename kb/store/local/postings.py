"""BM25 over segments with corpus-wide statistics.

Each segment stores raw postings: for every term, the rows that hold it and how often
(``tf``), plus every row's length in tokens. Nothing in a segment depends on the rest of
the library, so a segment never has to be rewritten when others change. The BM25 weight
of a posting is computed at query time from statistics summed over the live rows of all
segments (N, document frequency, average length), so a library cut into segments, with
deletions, scores exactly as a fresh build of the same documents.

Lengths are integers and sums are exact; every weight is the same floating-point
expression of the same inputs whichever segment holds the row, so the scores are
bit-identical to a fresh build's (tests/test_segments.py checks this).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kb.store.local.layout import save_array, save_json

FORMAT = 2


class Postings:
    """One segment's term -> (rows, tf) lists and row lengths."""

    def __init__(self, vocab: dict[str, int], indptr: np.ndarray, rows: np.ndarray, tf: np.ndarray,
                 lengths: np.ndarray) -> None:
        self.vocab = vocab
        self.indptr = indptr  # int64, len(vocab) + 1
        self.rows = rows  # int32 local rows, ascending within a term
        self.tf = tf  # float32 term frequencies
        self.lengths = lengths  # int32 tokens per row

    @property
    def n_rows(self) -> int:
        return len(self.lengths)

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        tid = self.vocab.get(term)
        if tid is None:
            return None
        s, e = int(self.indptr[tid]), int(self.indptr[tid + 1])
        return self.rows[s:e], self.tf[s:e]

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, token_lists: Sequence[Sequence[str]]) -> Postings:
        builder = PostingsBuilder()
        for tokens in token_lists:
            builder.add(tokens)
        return builder.finish()

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("indptr", "rows", "tf", "lengths"):
            save_array(d / f"{name}.npy", getattr(self, name))
        terms = [""] * len(self.vocab)
        for tok, tid in self.vocab.items():
            terms[tid] = tok
        save_json(d / "vocab.json", terms)
        save_json(d / "params.json", {"format": FORMAT, "rows": self.n_rows})

    @classmethod
    def load(cls, directory: str | Path) -> Postings:
        d = Path(directory)
        params = json.loads((d / "params.json").read_text(encoding="utf-8"))
        if params.get("format") != FORMAT:
            raise ValueError(f"{d.name}/ has postings format {params.get('format')}, expected {FORMAT}")
        arrays = {name: np.load(d / f"{name}.npy", mmap_mode="r") for name in ("indptr", "rows", "tf", "lengths")}
        terms = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        if len(arrays["indptr"]) != len(terms) + 1 or len(arrays["lengths"]) != params.get("rows"):
            raise ValueError(f"{d.name}/ is inconsistent")
        return cls({t: i for i, t in enumerate(terms)}, arrays["indptr"], arrays["rows"], arrays["tf"],
                   arrays["lengths"])


class PostingsBuilder:
    """Postings built row by row (term ids assigned as tokens arrive), sorted once at the end."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.term_ids: list[np.ndarray] = []
        self.lengths: list[int] = []

    def add(self, tokens: Sequence[str]) -> None:
        vocab = self.vocab
        ids = []
        for tok in tokens:
            tid = vocab.get(tok)
            if tid is None:
                tid = vocab[tok] = len(vocab)
            ids.append(tid)
        self.term_ids.append(np.asarray(ids, dtype=np.int64))
        self.lengths.append(len(ids))

    def finish(self) -> Postings:
        n_rows = len(self.lengths)
        lengths = np.asarray(self.lengths, dtype=np.int32)
        n_terms = len(self.vocab)
        terms = np.concatenate(self.term_ids) if self.term_ids else np.zeros(0, np.int64)
        self.term_ids = []
        if not len(terms):
            return Postings(self.vocab, np.zeros(n_terms + 1, np.int64), np.zeros(0, np.int32),
                            np.zeros(0, np.float32), lengths)
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
        key = terms * n_rows + rows
        del terms, rows
        key.sort()  # by term, then row
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        tf = np.diff(np.append(starts, len(key))).astype(np.float32)
        uniq = key[starts]
        del key, starts
        term_of = uniq // n_rows
        post_rows = (uniq - term_of * n_rows).astype(np.int32)
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_of, minlength=n_terms), out=indptr[1:])
        return Postings(self.vocab, indptr, post_rows, tf, lengths)
