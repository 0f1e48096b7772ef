"""``kb mcp``: the library as Model Context Protocol tools, so an assistant can answer with
quotes and their sources. Every passage comes with its citation string."""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kb.errors import KBError
from kb.search.filters import Filters
from kb.search.live import LiveSearcher
from kb.search.searcher import search_response
from kb.serve.access import redact_paths

# What an assistant needs of a passage to quote and cite it; the rest stays out of its context.
FIELDS = ("id", "doc_id", "title", "heading_path", "text", "score", "citation", "meta", "support")


def _one_line(tool):
    """kb's own one-line reason for the assistant (no passage with id …, empty query, an
    unknown mode), without a server path, and no traceback in the server's log."""
    @functools.wraps(tool)
    def call(*args, **kwargs):
        from mcp.server.mcpserver.exceptions import ToolError

        try:
            return tool(*args, **kwargs)
        except KBError as e:
            raise ToolError(redact_paths(str(e))) from None
    return call


def _passage(view) -> dict[str, Any]:
    data = asdict(view)
    return {k: data[k] for k in FIELDS if k in data}


def _title(hit) -> str:
    """A hit's title as a list shows it: its document and, after it, its section."""
    return " › ".join([hit.title] + hit.heading_path[1:][-1:])


def _url(hit) -> str:
    return hit.meta.get("url") or f"kb://passages/{hit.id}"


def build_server(index_dir: str | Path | None = None, library: LiveSearcher | None = None,
                 libraries: dict[str, str | Path] | None = None, name: str = "default"):
    """The MCP server over one library (``index_dir``, or ``library`` already open, called ``name``)
    or several (``libraries``: name -> index); every tool takes the ``library`` it asks, the first
    by default, and ``list_libraries`` names them."""
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    held = ({n: LiveSearcher(ix, warm=True) for n, ix in libraries.items()} if libraries
            else {name: library or LiveSearcher(index_dir, warm=True)})

    def pick(chosen: str) -> LiveSearcher:
        if not chosen:
            return next(iter(held.values()))
        if chosen not in held:
            raise KBError(f"no library named {chosen!r} (list_libraries names them)")
        return held[chosen]
    server = MCPServer("kb", instructions=(
        "A library of Chinese documents. Use `search` to find the passages that answer a question and quote "
        "them with their `citation`; `get_passage` shows a passage with its neighbours; `related` finds "
        "passages on the same subject; `fetch` gives one passage's full text by id. Passages marked "
        "low_confidence do not answer the question well."))
    reads = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

    @server.tool(annotations=reads)
    @_one_line
    def search(question: str = "", k: int = 5, mode: str = "hybrid", cite: str = "short",
               filters: dict[str, Any] | None = None, facets: bool = False, query: str = "",
               library: str = "") -> dict[str, Any]:
        """Find the passages that answer a question (Chinese works best). Returns up to k passages,
        best first, each with its document title, section path (heading_path), text and a ready-to-paste
        citation; cite is short, gbt7714 (GB/T 7714-2015) or apa. mode: hybrid, dense or lexical.
        `query` is the same as `question` (the name ChatGPT's connectors use); `results` lists the hits as
        {id, title, url} for `fetch`. `library`: which library to ask (list_libraries), the first by default.
        Words of the question in double quotes must appear as a phrase in every hit; -word leaves out
        passages that hold it.
        filters narrows the search: {"source": [..], "author": [..], "after": "2024-01-01", "before": "2024-12-31",
        "folder": [..], "type": ["pdf"], "tag": [..], "doc": [..]} (any value of a field, every field);
        facets: also count, by source, year, folder, type and tag, the documents of the passages the
        hits were ranked from (up to 100)."""
        k = max(1, min(int(k), 20))
        chosen = Filters.make(**(filters or {}))
        response = search_response(pick(library).current(), question or query, k=k, mode=mode, style=cite,
                                   filters=chosen, facets=bool(facets))
        out = {"query": response.query, "passages": [_passage(h) for h in response.hits],
               "results": [{"id": h.id, "title": _title(h), "url": _url(h)} for h in response.hits]}
        for key in ("low_confidence", "truncated", "filters", "empty_because", "facets"):
            if getattr(response, key):
                out[key] = getattr(response, key)
        return out

    @server.tool(annotations=reads)
    @_one_line
    def list_libraries() -> dict[str, Any]:
        """The libraries this server holds (the first is asked when a tool names none), with their size."""
        out = []
        for n, lib in held.items():
            try:
                count = lib.current().count
            except KBError:
                count = None
            out.append({"name": n, "passages": count})
        return {"libraries": out}

    @server.tool(annotations=reads)
    @_one_line
    def fetch(id: str, library: str = "") -> dict[str, Any]:  # noqa: A002 - the name ChatGPT's connectors use
        """One passage by id (from search): its full text under its section path, its document's title,
        a URL (the document's own, else kb://passages/ID) and metadata with its citation."""
        hit = pick(library).current().passage_hit(id)
        section = " › ".join(hit.heading_path[1:])
        return {"id": hit.id, "title": _title(hit), "text": (section + "\n\n" if section else "") + hit.text,
                "url": _url(hit),
                "metadata": {"document": hit.title, "heading_path": hit.heading_path, "path": hit.path,
                             "page": hit.locator or None, "citation": hit.citation, **hit.meta}}

    @server.tool(annotations=reads)
    @_one_line
    def get_passage(passage_id: str, context: int = 1, library: str = "") -> dict[str, Any]:
        """A passage by id (from search), with up to `context` neighbouring paragraphs before and after,
        its document's metadata and its citation."""
        searcher = pick(library).current()
        view = searcher.show(passage_id, context=max(0, min(int(context), 5)))
        hit = searcher.passage_hit(passage_id)
        return {"passage": _passage(hit), "before": [b["text"] for b in view["before"]],
                "after": [a["text"] for a in view["after"]]}

    @server.tool(annotations=reads)
    @_one_line
    def related(passage_id: str, k: int = 5, filters: dict[str, Any] | None = None,
                library: str = "") -> dict[str, Any]:
        """Passages on the same subject as the given one (not itself, its paragraph or its sub-points),
        each with its citation; filters as for search."""
        hits = pick(library).current().related(passage_id, k=max(1, min(int(k), 20)),
                                         filters=Filters.make(**(filters or {})))
        return {"passage": passage_id, "passages": [_passage(h) for h in hits]}

    return server
