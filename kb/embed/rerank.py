"""Optional cross-encoder reranking (sentence-transformers ``CrossEncoder``).

Off by default: no cross-encoder ships offline. With one (a Hub name such as
``BAAI/bge-reranker-base`` on a machine that reaches the Hub, or a local path), the top
candidates of the fused ranking are re-scored jointly with the question.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from kb.errors import KBError


class Reranker:
    def __init__(self, model: str, device: str | None = None, max_length: int = 512, depth: int = 30) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as e:
            raise KBError("--rerank needs sentence-transformers, which is not installed: pip install 'kb[st]'") from e
        try:
            self._ce = CrossEncoder(model, device=device, max_length=max_length)
        except Exception as e:
            raise KBError(f"cannot load cross-encoder {model!r}: {type(e).__name__}: {e}") from e
        self.model = model
        self.depth = depth
        self._lock = threading.Lock()

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Relevance of each text to the query, squashed to 0-1."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            logits = np.asarray(self._ce.predict([(query, t) for t in texts], show_progress_bar=False),
                                dtype=np.float32).reshape(len(texts), -1)
        logit = logits[:, -1] if logits.shape[1] > 1 else logits[:, 0]
        if np.all((logit >= 0) & (logit <= 1)):
            return logit  # the model already ends in a sigmoid
        return 1.0 / (1.0 + np.exp(-logit))
