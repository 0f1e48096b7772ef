"""BM25 over jieba tokens as a precomputed sparse term x passage matrix.

Every BM25 weight is computed at index time; a query is the sum of a few matrix rows
(``np.bincount`` over their non-zeros), so there is no per-passage Python loop at query
time. Arrays are saved as ``.npy`` and memory-mapped on load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .store import save_array, save_json

FORMAT = 1


class BM25Index:
    def __init__(self, vocab: dict[str, int], data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 idf: np.ndarray, n_docs: int, params: dict) -> None:
        self.vocab = vocab
        self.data = data  # float32 BM25 weights, term-major (CSR rows = terms)
        self.indices = indices  # int32 passage rows
        self.indptr = indptr  # int64, len(vocab) + 1
        self.idf = idf
        self.n_docs = n_docs
        self.params = params

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, token_lists: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> BM25Index:
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        doc_ids: list[int] = []
        doc_len = np.zeros(len(token_lists), dtype=np.float32)
        for d, tokens in enumerate(token_lists):
            doc_len[d] = len(tokens)
            for tok in tokens:
                tid = vocab.get(tok)
                if tid is None:
                    tid = vocab[tok] = len(vocab)
                term_ids.append(tid)
                doc_ids.append(d)
        n_docs = len(token_lists)
        n_terms = len(vocab)
        if not term_ids:
            return cls(vocab, np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(n_terms + 1, np.int64),
                       np.zeros(n_terms, np.float32), n_docs, {"k1": k1, "b": b, "avgdl": 0.0})
        key = np.asarray(term_ids, dtype=np.int64) * max(n_docs, 1) + np.asarray(doc_ids, dtype=np.int64)
        uniq, tf = np.unique(key, return_counts=True)  # sorted by term, then passage
        terms = (uniq // max(n_docs, 1)).astype(np.int64)
        docs = (uniq % max(n_docs, 1)).astype(np.int32)
        df = np.bincount(terms, minlength=n_terms).astype(np.float32)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        avgdl = float(doc_len.mean()) if n_docs else 0.0
        tf = tf.astype(np.float32)
        norm = k1 * (1.0 - b + b * doc_len[docs] / max(avgdl, 1e-9))
        data = (idf[terms] * tf * (k1 + 1.0) / (tf + norm)).astype(np.float32)
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(df.astype(np.int64), out=indptr[1:])
        return cls(vocab, data, docs, indptr, idf, n_docs, {"k1": k1, "b": b, "avgdl": avgdl})

    # ------------------------------------------------------------------ query
    def scores(self, tokens: Sequence[str], weights: dict[str, float] | None = None) -> np.ndarray:
        """BM25 score of every passage for the query ``tokens`` (each distinct term once)."""
        out = np.zeros(self.n_docs, dtype=np.float32)
        for tok in dict.fromkeys(tokens):
            tid = self.vocab.get(tok)
            if tid is None:
                continue
            s, e = int(self.indptr[tid]), int(self.indptr[tid + 1])
            w = 1.0 if weights is None else weights.get(tok, 1.0)
            if w == 1.0:
                out[self.indices[s:e]] += self.data[s:e]
            else:
                out[self.indices[s:e]] += w * self.data[s:e]
        return out

    def idf_of(self, token: str) -> float:
        tid = self.vocab.get(token)
        return float(self.idf[tid]) if tid is not None else 0.0

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("data", "indices", "indptr", "idf"):
            save_array(d / f"{name}.npy", getattr(self, name))
        terms = [None] * len(self.vocab)
        for tok, tid in self.vocab.items():
            terms[tid] = tok
        save_json(d / "vocab.json", terms)
        save_json(d / "params.json", {**self.params, "n_docs": self.n_docs, "format": FORMAT})

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> BM25Index:
        d = Path(directory)
        mode = "r" if mmap else None
        arrays = {name: np.load(d / f"{name}.npy", mmap_mode=mode) for name in ("data", "indices", "indptr", "idf")}
        terms = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        params = json.loads((d / "params.json").read_text(encoding="utf-8"))
        n_docs = int(params.pop("n_docs"))
        params.pop("format", None)
        return cls({t: i for i, t in enumerate(terms)}, arrays["data"], arrays["indices"], arrays["indptr"],
                   arrays["idf"], n_docs, params)


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest positive scores, best first."""
    if mask is not None:
        scores = np.where(mask, scores, 0.0)
    n = int(np.count_nonzero(scores > 0))
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx.astype(np.int64), scores[idx]
