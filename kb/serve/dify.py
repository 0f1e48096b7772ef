"""Dify's external knowledge API on ``kb serve``: ``POST /retrieval``.

Dify calls ``{endpoint}/retrieval`` with ``Authorization: Bearer <key>`` and
``{knowledge_id, query, retrieval_setting: {top_k, score_threshold}, metadata_condition?}``
and shows the ``records`` it gets back (https://docs.dify.ai/en/use-dify/knowledge/external-knowledge-api).
Here ``knowledge_id`` names the library ``kb serve`` holds (``--name``, ``default`` unless given);
``score_threshold`` applies to kb's calibrated 0–1 score; ``metadata_condition`` becomes kb's
filters where the fields exist (:func:`condition_filters`). Errors are Dify's
``{error_code, error_msg}``: 1001 a malformed Authorization header and 1002 a wrong key (both 403),
2001 an unknown knowledge base (404), 4001 a metadata condition kb cannot apply (400).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kb.search.filters import MAX_VALUES, Filters
from kb.search.searcher import search_response

MAX_TOP_K = 100

# Dify's metadata names -> kb's filter fields (a list-valued field takes any of its values)
FIELDS = {"source": "source", "来源": "source", "author": "author", "作者": "author", "tag": "tag", "tags": "tag",
          "标签": "tag", "type": "type", "format": "type", "folder": "folder", "doc_id": "doc", "document_id": "doc",
          "date": "date", "日期": "date"}
_EQUALS = {"is", "=", "in"}
_AFTER = {"after", ">", "≥", ">="}
_BEFORE = {"before", "<", "≤", "<="}


class RetrievalSetting(BaseModel):
    model_config = ConfigDict(extra="allow")
    top_k: int = Field(ge=1, le=MAX_TOP_K)
    score_threshold: float = Field(default=0.0, ge=0, le=1)


class Condition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | list[str]
    comparison_operator: str = Field(max_length=20)
    value: str | int | float | list[str] | None = None


class MetadataCondition(BaseModel):
    model_config = ConfigDict(extra="allow")
    logical_operator: str = Field(default="and", pattern="^(and|or)$")
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_VALUES)


class RetrievalRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    knowledge_id: str = Field(max_length=200)
    query: str = Field(min_length=1, max_length=100_000)
    retrieval_setting: RetrievalSetting
    metadata_condition: MetadataCondition | None = None


class RecordMetadata(BaseModel):
    passage_id: str
    path: str
    heading_path: list[str]
    page: str | None
    source: str | None
    date: str | None
    citation: str


class Record(BaseModel):
    content: str
    score: float
    title: str
    metadata: RecordMetadata


class Records(BaseModel):
    records: list[Record]


class DifyError(BaseModel):
    error_code: int
    error_msg: str


class UnsupportedCondition(ValueError):
    """A metadata condition kb's filters cannot express."""


def dify_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "error_msg": message}, status_code=status)


def condition_filters(mc: MetadataCondition | None) -> Filters:
    """kb's filters for a Dify ``metadata_condition``: with ``and``, every condition holds
    (values of one field OR'ed, fields AND'ed, as kb filters are); with ``or``, conditions on one
    field only. ``is``/``=``/``in`` on source, author, tag, type, folder or document id; ``after``
    /``before`` (and ``>``, ``≥``, ``<``, ``≤``) on ``date``. Anything else raises
    :class:`UnsupportedCondition` rather than being dropped in silence."""
    if mc is None or not mc.conditions:
        return Filters()
    values: dict[str, list[str]] = {}
    days: dict[str, str] = {}
    for c in mc.conditions:
        names = c.name if isinstance(c.name, list) else [c.name]
        if len(names) != 1 or names[0] not in FIELDS:
            raise UnsupportedCondition(f"metadata field {names!r}: kb filters on {', '.join(sorted(set(FIELDS)))}")
        field, op = FIELDS[names[0]], c.comparison_operator.strip().lower()
        given = c.value if isinstance(c.value, list) else [] if c.value is None else [c.value]
        if not given:
            raise UnsupportedCondition(f"{names[0]} {op}: needs a value")
        if field == "date":
            if op not in _AFTER | _BEFORE or len(given) != 1:
                raise UnsupportedCondition(f"date {op}: kb filters dates with after/before")
            days["after" if op in _AFTER else "before"] = str(given[0])[:10]
        elif op in _EQUALS:
            values.setdefault(field, []).extend(str(v) for v in given)
        else:
            raise UnsupportedCondition(f"{names[0]} {op}: kb filters {names[0]} with is / in")
    fields = set(values) | ({"date"} if days else set())
    if mc.logical_operator == "or" and len(fields) > 1:
        raise UnsupportedCondition("or across different fields: kb ANDs its filters across fields")
    return Filters.make(**values, **days)


def records(response) -> list[dict[str, Any]]:
    """Dify's records for kb's hits: ``metadata`` always an object."""
    out = []
    for hit in response.hits:
        out.append({
            "content": hit.text,
            "score": hit.score,
            "title": hit.title,
            "metadata": {"passage_id": hit.id, "path": hit.path, "heading_path": hit.heading_path,
                         "page": hit.locator or None, "source": hit.meta.get("source"),
                         "date": hit.meta.get("date"), "citation": hit.citation},
        })
    return out


def add_retrieval(app: FastAPI, identify, library_for, open_access: bool, errors: dict | None = None) -> None:
    """``POST /retrieval`` on ``app``: ``identify(request)`` is the key's principal (raising 401),
    ``library_for(knowledge_id, principal)`` the library's searcher (raising 403 for a library the
    key does not open, 404 for one that does not exist); ``open_access``: a request without a key is
    answered (loopback, no token)."""

    @app.post("/retrieval", summary="Dify's external knowledge API: the passages for a query",
              response_model=Records, responses={
                  400: {"model": DifyError, "description": "error_code 4001: a metadata condition kb cannot apply"},
                  403: {"model": DifyError, "description": "error_code 1001 (malformed header) or 1002 (wrong key)"},
                  404: {"model": DifyError, "description": "error_code 2001: no such knowledge base"},
                  **{code: v for code, v in (errors or {}).items() if code in (413, 422, 429, 503)}})
    def retrieval(body: RetrievalRequest, request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if (header or not open_access) and (scheme.lower() != "bearer" or not key.strip()):
            return dify_error(403, 1001, "Invalid Authorization header format. Expected 'Bearer <api-key>' format.")
        try:
            who = identify(request)
        except StarletteHTTPException:
            return dify_error(403, 1002, "Authorization failed")
        try:
            searcher = library_for(body.knowledge_id, who)
        except StarletteHTTPException as e:
            if e.status_code == 404:
                return dify_error(404, 2001, "The knowledge does not exist")
            return dify_error(403, 1002, "Authorization failed")  # the same whether it exists or not
        try:
            filters = condition_filters(body.metadata_condition)
        except UnsupportedCondition as e:
            return dify_error(400, 4001, f"Unsupported metadata condition: {e}")
        setting = body.retrieval_setting
        response = search_response(searcher, body.query, k=setting.top_k, filters=filters,
                                   min_score=setting.score_threshold or None)
        return JSONResponse({"records": records(response)})
