"""Where a retriever's passages come from: an index opened in this process, or a ``kb serve`` over
HTTP (``GET /search`` with its key). Both give the hits as ``kb search --json`` lists them."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from kb.errors import KBError
from kb.search.filters import Filters
from kb.search.live import LiveSearcher
from kb.search.searcher import search_response

TIMEOUT_S = 30


class PassageSource:
    """``hits(question)`` from ``index`` (a folder, a Milvus Lite ``.db`` or a Milvus URI) or from
    ``url`` (a ``kb serve``, with ``api_key`` when it needs one); exactly one of the two."""

    def __init__(self, index: str | Path | None = None, url: str | None = None, api_key: str | None = None,
                 k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None,
                 min_score: float | None = None) -> None:
        if (index is None) == (url is None):
            raise KBError("give either index= (in-process) or url= (a kb serve), not both")
        if url is not None and not url.startswith(("http://", "https://")):
            raise KBError(f"url must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/") if url else None
        self.api_key = api_key
        self.k, self.mode, self.filters, self.min_score = k, mode, dict(filters or {}), min_score
        self._live = LiveSearcher(index) if index is not None else None

    def hits(self, question: str) -> list[dict[str, Any]]:
        if self._live is not None:
            response = search_response(self._live.current(), question, k=self.k, mode=self.mode,
                                       filters=Filters.make(**self.filters), min_score=self.min_score)
            return response.to_dict()["hits"]
        body = {"q": question, "k": self.k, "mode": self.mode, "filters": self.filters}
        if self.min_score is not None:
            body["min_score"] = self.min_score
        request = urllib.request.Request(self.url + "/search", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {self.api_key}"}
                                                     if self.api_key else {})})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
                return json.loads(r.read())["hits"]
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail", "")
            except ValueError:
                detail = ""
            raise KBError(f"kb serve answered {e.code}: {detail or e.reason}") from None
        except (urllib.error.URLError, TimeoutError) as e:
            raise KBError(f"cannot reach kb serve at {urllib.parse.urlsplit(self.url).netloc}: {e}") from None


def metadata(hit: dict[str, Any]) -> dict[str, Any]:
    """What a framework's document carries besides its text: where it comes from and how to cite it."""
    return {"passage_id": hit["id"], "doc_id": hit["doc_id"], "title": hit["title"],
            "heading_path": hit["heading_path"], "path": hit.get("path", ""), "page": hit.get("locator") or None,
            "citation": hit["citation"], "score": hit["score"],
            **{k: v for k, v in (hit.get("meta") or {}).items() if k in ("source", "author", "date", "url")}}
