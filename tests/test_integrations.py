"""kb inside LangChain and LlamaIndex: each retriever in-process on an index and over HTTP on a real
``kb serve`` (uvicorn in a thread) with a key, giving the same passages as ``kb search`` with their
citation and section path in metadata."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from kb.errors import KBError
from kb.search.searcher import Searcher

from .conftest import library_with

TOKEN = "a-long-enough-integration-token"
QUESTION = "加强学习 提高素质"


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    return library_with(tmp_path_factory.mktemp("integrations"), {
        "notice.txt": "关于加强基层工作的通知\n\n来源：县委办公室 时间：2025-03-02\n\n一、总体要求\n"
                      "总的要求是：一是加强学习，提高素质；二是改进作风；三是严守纪律。\n"})


@pytest.fixture(scope="module")
def server(library):
    """A kb serve (with a key) on a free port, for the HTTP side of the retrievers."""
    import uvicorn

    from kb.serve.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(library[1], token=TOKEN), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a busy machine starts it slowly: wait, then skip rather than fail
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not srv.started:
        srv.should_exit = True
        pytest.skip("kb serve did not start within 120 s on this machine")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def expected(library) -> list[str]:
    return [h.id for h in Searcher.load(library[1]).search(QUESTION, k=3)]


def test_langchain_retriever_in_process_and_over_http(library, server):
    from langchain_core.documents import Document

    from kb.integrations.langchain import KBRetriever

    local = KBRetriever(index=str(library[1]), k=3).invoke(QUESTION)
    remote = KBRetriever(url=server, api_key=TOKEN, k=3).invoke(QUESTION)
    assert [d.id for d in local] == [d.id for d in remote] == expected(library)
    assert all(isinstance(d, Document) for d in local)
    notice = next(d for d in local if d.metadata["path"] == "notice.txt")
    assert "加强学习" in notice.page_content and notice.metadata["citation"]
    assert notice.metadata["heading_path"][0] == "关于加强基层工作的通知" and notice.metadata["source"] == "县委办公室"
    with pytest.raises(KBError, match="401"):
        KBRetriever(url=server, api_key="not-the-key-at-all", k=3).invoke(QUESTION)


def test_llamaindex_retriever_in_process_and_over_http(library, server):
    from llama_index.core.schema import NodeWithScore

    from kb.integrations.llamaindex import KBRetriever

    local = KBRetriever(index=str(library[1]), k=3).retrieve(QUESTION)
    remote = KBRetriever(url=server, api_key=TOKEN, k=3).retrieve(QUESTION)
    assert [n.node.node_id for n in local] == [n.node.node_id for n in remote] == expected(library)
    assert all(isinstance(n, NodeWithScore) and 0 <= n.score <= 1 for n in local)
    assert [n.score for n in local] == sorted((n.score for n in local), reverse=True)
    top = next(n for n in local if n.node.metadata["path"] == "notice.txt")
    assert "加强学习" in top.node.get_content() and top.node.metadata["citation"]


def test_a_retriever_needs_exactly_one_place_to_ask():
    from kb.integrations.source import PassageSource

    with pytest.raises(KBError, match="either index= .* or url="):
        PassageSource()
    with pytest.raises(KBError, match="http"):
        PassageSource(url="file:///etc/passwd")
