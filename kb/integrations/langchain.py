"""kb as a LangChain retriever (``pip install 'kb[langchain]'``)::

    from kb.integrations.langchain import KBRetriever
    retriever = KBRetriever(index="index", k=5)                     # in-process
    retriever = KBRetriever(url="http://server:8000", api_key="…")  # a kb serve
    docs = retriever.invoke("学习型政党有什么要求")   # Documents: the passage text, and in metadata
                                                      # its citation, section path, page, source, date
"""

from __future__ import annotations

from typing import Any

from kb.errors import KBError

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as e:  # the extra is not installed
    raise KBError("kb.integrations.langchain needs langchain-core: pip install 'kb[langchain]'") from e
from pydantic import ConfigDict, PrivateAttr

from kb.integrations.source import PassageSource, metadata


class KBRetriever(BaseRetriever):
    """The passages that answer a query, best first, as LangChain ``Document``s."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    index: str | None = None
    url: str | None = None
    api_key: str | None = None
    k: int = 5
    mode: str = "hybrid"
    filters: dict[str, Any] | None = None
    min_score: float | None = None
    _source: PassageSource = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._source = PassageSource(self.index, self.url, self.api_key, self.k, self.mode, self.filters,
                                     self.min_score)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=h["text"], metadata=metadata(h), id=h["id"]) for h in self._source.hits(query)]
