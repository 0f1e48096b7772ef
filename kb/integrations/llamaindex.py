"""kb as a LlamaIndex retriever (``pip install 'kb[llamaindex]'``)::

    from kb.integrations.llamaindex import KBRetriever
    retriever = KBRetriever(index="index", k=5)                     # in-process
    retriever = KBRetriever(url="http://server:8000", api_key="…")  # a kb serve
    nodes = retriever.retrieve("学习型政党有什么要求")  # NodeWithScores: the passage, kb's calibrated
                                                       # score, and its citation and section path in metadata
"""

from __future__ import annotations

from typing import Any

from kb.errors import KBError

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # the extra is not installed
    raise KBError("kb.integrations.llamaindex needs llama-index-core: pip install 'kb[llamaindex]'") from e

from kb.integrations.source import PassageSource, metadata


class KBRetriever(BaseRetriever):
    """The passages that answer a query, best first, as LlamaIndex ``NodeWithScore``s."""

    def __init__(self, index: str | None = None, url: str | None = None, api_key: str | None = None, k: int = 5,
                 mode: str = "hybrid", filters: dict[str, Any] | None = None, min_score: float | None = None,
                 **kwargs: Any) -> None:
        self._source = PassageSource(index, url, api_key, k, mode, filters, min_score)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(text=h["text"], id_=h["id"], metadata=metadata(h)), score=h["score"])
                for h in self._source.hits(query_bundle.query_str)]
