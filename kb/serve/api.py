"""``kb serve``: the library over HTTP, for programs (FastAPI on uvicorn).

One process holds the index open; when ``kb index`` publishes a new generation, the next
request is answered from it (no restart, no error during the swap). Every answer is built
from the views the CLI and the page render (:mod:`kb.present.views`), serialised by the same
``to_dict``. Errors are JSON ``{"error", "detail"}`` with a 4xx/5xx code, never a
traceback and never a server path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from kb import __version__
from kb.embed.embedders import Embedder
from kb.errors import EmptyQuery, IndexDamaged, KBError, UnknownPassage
from kb.present.views import DocumentView, PassageView, SearchResponse
from kb.records import SEARCH_MODES
from kb.search.filters import MAX_VALUE_CHARS, MAX_VALUES, TYPES, FilterError, Filters
from kb.search.live import LiveSearcher
from kb.search.searcher import MAX_QUERY_CHARS, Searcher, search_response
from kb.serve.access import redact_paths, token_matches
from kb.serve.dify import add_retrieval
from kb.serve.keys import ACCESS_TOKEN, ALL, ANYONE, KeyStore, Library, Principal, audit_write
from kb.serve.uploads import (
    UPLOAD_LIMIT_MB,
    UPLOAD_SUFFIXES,
    Reindexer,
    document_folder,
    remove_document,
    save_upload,
)

MAX_K = 100
MAX_BODY_BYTES = 64 * 1024  # a POST /search body at most; anything bigger is refused unread
MAX_UPLOAD_BYTES = UPLOAD_LIMIT_MB * 1024 * 1024  # a document uploaded to POST …/documents at most
QUESTION_HELP = (f"The question; only its first {MAX_QUERY_CHARS} characters are used (the answer then says "
                 "truncated: true). Words in double quotes (\"…\" or “…”) must appear as a phrase in every hit; "
                 "-word leaves out passages that hold it.")
Mode = Annotated[str, Query(pattern="^(" + "|".join(SEARCH_MODES) + ")$", description="hybrid, dense or lexical")]


FILTER_HELP = {
    "source": "Only documents from this source (repeatable: any of them)",
    "author": "Only documents by this author (repeatable)",
    "after": "Only documents dated on or after this day (YYYY-MM-DD, YYYY-MM or YYYY)",
    "before": "Only documents dated on or before this day (YYYY-MM-DD, YYYY-MM or YYYY)",
    "folder": "Only documents in this folder of the library, or below it (repeatable)",
    "type": "Only documents of this type: " + ", ".join(TYPES) + " (repeatable)",
    "tag": "Only documents with this tag (repeatable)",
    "doc": "Only this document id (repeatable)",
}
FACETS_HELP = "Count by field the documents the hits were ranked from"
# the shape of a date (a day that does not exist, 2024-02-31, is still a 422 naming the field)
DATE_SHAPE = r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$"


Values = Annotated[list[str] | None, Query(max_length=MAX_VALUES)]  # a repeatable filter: any of them
Day = Annotated[str | None, Query(pattern=DATE_SHAPE, description="A day (YYYY-MM-DD), a month (YYYY-MM) or a year; "
                                                                  "after: from its first day, before: to its last")]


def query_filters(source: Values = None, author: Values = None, after: Day = None, before: Day = None,
                  folder: Values = None, type: Values = None, tag: Values = None, doc: Values = None) -> Filters:
    """The filter parameters of a GET request (those of `kb search`), checked."""
    return Filters.make(source=source, author=author, after=after, before=before, folder=folder, type=type,
                        tag=tag, doc=doc)


QueryFilters = Annotated[Filters, Depends(query_filters)]


class SearchFilters(BaseModel):
    """AND across fields, OR within one; a filter that allows no document gives no hits."""

    model_config = ConfigDict(extra="forbid")
    source: list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description=FILTER_HELP["source"])
    author: list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description=FILTER_HELP["author"])
    after: str | None = Field(default=None, pattern=DATE_SHAPE, description=FILTER_HELP["after"])
    before: str | None = Field(default=None, pattern=DATE_SHAPE, description=FILTER_HELP["before"])
    folder: list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description=FILTER_HELP["folder"])
    type: list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description=FILTER_HELP["type"])
    tag: list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description=FILTER_HELP["tag"])
    doc: list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description=FILTER_HELP["doc"])


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: str = Field(min_length=1, max_length=100_000, description=QUESTION_HELP)
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: str = Field(default="hybrid", pattern="^(" + "|".join(SEARCH_MODES) + ")$")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    cite: str = Field(default="short", pattern="^(short|gbt7714|apa)$")
    min_score: float | None = Field(default=None, ge=0, le=1)
    facets: bool = False
    library: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description="Search these libraries; default: every one the key "
                                                                 "opens")


@dataclass
class ErrorBody:
    error: str
    detail: str


@dataclass
class DocumentPage:
    total: int
    offset: int
    limit: int
    documents: list[DocumentView]


@dataclass
class FullDocument:
    document: DocumentView
    text: str
    passages: list[dict[str, Any]]


@dataclass
class PassageContext:
    passage: dict[str, Any]
    document: DocumentView
    parent: dict[str, Any] | None
    children: list[dict[str, Any]]
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    citation: str


@dataclass
class RelatedPassages:
    passage: str
    hits: list[PassageView]


@dataclass
class Indexing:
    """How the library's background re-indexing stands: idle, queued, running, done or failed."""
    state: str
    runs: int
    started: str | None = None
    finished: str | None = None
    summary: str | None = None
    warnings: list[str] | None = None
    error: str | None = None
    again: bool | None = None


@dataclass
class WriteAnswer:
    indexing: Indexing
    saved: str | None = None
    removed: str | None = None


@dataclass
class Health:
    status: str
    generation: str
    passages: int


ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in (
    (400, "A bad request"), (401, "Missing or wrong API key"),
    (403, "The key does not open this library, or may not do this in it"),
    (404, "No such passage, document or library"),
    (413, "Request too large"), (422, "A parameter is invalid"), (429, "Rate limit exceeded"),
    (503, "The index is missing or damaged"))}


class Unavailable(KBError):
    """The index cannot be opened: missing, damaged, or being replaced."""


class RateLimiter:
    """At most ``per_minute`` requests per client address in any calendar minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def allow(self, client: str) -> bool:
        minute = int(time.time() // 60)
        with self._lock:
            start, count = self._windows.get(client, (minute, 0))
            if start != minute:
                start, count = minute, 0
            if len(self._windows) > 10_000:  # forget old clients
                self._windows = {c: w for c, w in self._windows.items() if w[0] == minute}
            self._windows[client] = (start, count + 1)
            return count < self.per_minute


def _error(status: int, error: str, detail: str = "", roots: list[FsPath | str] = ()) -> JSONResponse:
    names: set[str] = set()
    for root in roots:  # kb's messages name the index folder: say "the index" instead
        names |= {str(root)} if str(root).startswith(("http://", "https://")) else {str(FsPath(root).resolve()),
                                                                                     str(root)}
    for name in sorted(names, key=len, reverse=True):
        detail = detail.replace(name + "/", "the index").replace(name, "the index")
    return JSONResponse({"error": error, "detail": redact_paths(detail)}, status_code=status)


DEFAULT_NAME = "default"  # the library's name when none is given: Dify's knowledge_id
LibraryName = Annotated[str, Path(max_length=40, pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]


def not_yours(library: str) -> StarletteHTTPException:
    # one answer whether the library exists or not: a key learns nothing of the others
    return StarletteHTTPException(403, f"this key does not open a library named {library!r}")


def create_app(index_dir: str | FsPath | None = None, token: str | None = None, rate_limit: int | None = None,
               cors_origins: list[str] | None = None, embedder: Embedder | None = None,
               name: str = DEFAULT_NAME, libraries: dict[str, str | FsPath | Library] | None = None,
               keys: KeyStore | None = None, require_key: bool = False) -> FastAPI:
    """The API over one library (``index_dir``, called ``name``) or several (``libraries``: name ->
    index or :class:`Library`; each also under ``/libraries/{name}/…``). ``token``
    (``KB_ACCESS_TOKEN``) opens every library as admin; ``keys`` are the scoped keys of ``KB_HOME``
    (:mod:`kb.serve.keys`, whose audit log records the writes); without a key a request is answered
    only when neither a token is set nor ``require_key``. ``rate_limit``: requests per minute per
    client; ``name``: Dify's ``knowledge_id`` (:mod:`kb.serve.dify`)."""
    named = {n: lib if isinstance(lib, Library) else Library(n, str(lib))
             for n, lib in (libraries or {name: index_dir or "index"}).items()}
    live = {n: LiveSearcher(lib.index, embedder=embedder) for n, lib in named.items()}
    reindexers = {n: Reindexer(lib.index) for n, lib in named.items()}
    first = next(iter(live.values()))
    open_access = token is None and not require_key

    def fail(status: int, error: str, detail: str = "") -> JSONResponse:
        return _error(status, error, detail, roots=[lib.location for lib in live.values()])

    limiter = RateLimiter(rate_limit) if rate_limit else None
    app = FastAPI(title="kb", version=__version__,
                  description="Search a library of Chinese documents and cite the passages that answer. "
                              "Every hit carries its document, section path, source, date and a citation.")
    app.state.library = first
    app.state.libraries = live
    app.state.reindexers = reindexers
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET"],
                           allow_headers=["Authorization"])

    _bound_requests(app, fail, limiter)

    def principal(request: Request) -> Principal:
        """The key a request carries, checked; 401 when it is missing (and needed) or wrong."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        value = value.strip()
        if not value and open_access:
            return ANYONE
        if scheme.lower() == "bearer" and value:
            if token is not None and token_matches(value, token):
                return ACCESS_TOKEN
            key = keys.verify(value) if keys is not None else None
            if key is not None:
                return key
        raise StarletteHTTPException(401, "missing or wrong API key (Authorization: Bearer …)")

    def opened(library: str, who: Principal) -> Searcher:
        """The live searcher of ``library`` for ``who``; 403 (the same for one that does not exist) or 503."""
        if not who.opens(library):
            raise not_yours(library)
        if library not in live:
            raise not_yours(library) if who.library != ALL else StarletteHTTPException(
                404, f"no library named {library!r}")
        try:
            return live[library].current()
        except KBError as e:
            raise Unavailable(str(e)) from e

    def readable(who: Principal) -> list[str]:
        return [n for n in live if who.opens(n)]

    def the_only_name(who: Principal) -> str:
        """The library of the single-library paths: the only one this server (or this key) has."""
        mine = readable(who)
        if len(mine) != 1:
            raise StarletteHTTPException(404, "this server holds several libraries: ask /libraries/{name}/…")
        return mine[0]

    def writer(library: str, who: Principal) -> Writer:
        """What a write to ``library`` needs, for a key that may write there (403 otherwise)."""
        try:
            searcher: Searcher | None = opened(library, who)
        except Unavailable:
            if not named[library].docs:  # nothing to build it from
                raise
            searcher = None  # not built yet: a re-index of its document folder builds it
        if not who.may("write"):
            raise StarletteHTTPException(403, f"this key may only read library {library!r}")
        return Writer(library, searcher, who, named[library].docs, reindexers[library],
                      keys.home if keys is not None else None)

    def by_name(name: LibraryName, who: Principal = Depends(principal)) -> Searcher:
        return opened(name, who)

    def the_only(who: Principal = Depends(principal)) -> Searcher:
        return opened(the_only_name(who), who)

    def writer_by_name(name: LibraryName, who: Principal = Depends(principal)) -> Writer:
        return writer(name, who)

    def the_only_writer(who: Principal = Depends(principal)) -> Writer:
        return writer(the_only_name(who), who)

    def indexing_by_name(name: LibraryName, who: Principal = Depends(principal)) -> Reindexer:
        opened(name, who)
        return reindexers[name]

    def the_only_indexing(who: Principal = Depends(principal)) -> Reindexer:
        return indexing_by_name(the_only_name(who), who)

    _answer_errors(app, fail)
    _library_routes(app, "", the_only)
    _library_routes(app, "/libraries/{name}", by_name)
    _write_routes(app, "", the_only_writer, the_only_indexing)
    _write_routes(app, "/libraries/{name}", writer_by_name, indexing_by_name)

    @app.get("/search", response_model=SearchResponse, responses=ERRORS,
             summary="The passages that answer a question (the JSON of `kb search --json`); library= (repeatable) "
                     "searches several libraries, merged by score")
    def search(q: Annotated[str, Query(min_length=1, max_length=100_000,
                                       description=QUESTION_HELP)],
               filters: QueryFilters, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, mode: Mode = "hybrid",
               cite: Annotated[str, Query(pattern="^(short|gbt7714|apa)$")] = "short",
               min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
               facets: Annotated[bool, Query(description=FACETS_HELP)] = False,
               library: Annotated[list[str] | None, Query(max_length=MAX_VALUES,
                                                          description="Search these libraries (repeatable); "
                                                                      "default: every one the key opens")] = None,
               who: Principal = Depends(principal)):
        names = list(dict.fromkeys(library)) if library else readable(who)
        return _answer(names, who, q, k, mode, filters, cite, min_score, facets)

    @app.post("/search", response_model=SearchResponse, responses=ERRORS,
              summary="The same search with its filters in a JSON body")
    def search_body(body: SearchRequest, who: Principal = Depends(principal)) -> JSONResponse:
        filters = Filters.make(**body.filters.model_dump())
        names = list(dict.fromkeys(body.library)) if body.library else readable(who)
        return _answer(names, who, body.q, body.k, body.mode, filters, body.cite, body.min_score, body.facets)

    def _answer(names, who, q, k, mode, filters, cite, min_score, facets) -> JSONResponse:
        if len(names) == 1:
            response = search_response(opened(names[0], who), q, k=k, mode=mode, filters=filters, style=cite,
                                       min_score=min_score, facets=facets)
            return JSONResponse(response.to_dict())
        if not names:
            raise StarletteHTTPException(403, "this key opens no library")
        if facets:
            raise FilterError("facets", "one library at a time (ask /libraries/{name}/search)")
        return JSONResponse(merged_search([(n, opened(n, who)) for n in names], q, k=k, mode=mode, filters=filters,
                                          style=cite, min_score=min_score))

    @app.get("/libraries", response_model=list[dict[str, Any]], responses=ERRORS,
             summary="The libraries this key opens")
    def list_libraries(who: Principal = Depends(principal)) -> JSONResponse:
        return JSONResponse([{"name": n, "role": who.role} for n in readable(who)])

    @app.get("/keys", response_model=list[dict[str, Any]], responses=ERRORS,
             summary="The keys of the libraries this admin key governs: names, scopes, created, last used "
                     "(never a secret)")
    def list_keys(who: Principal = Depends(principal)) -> JSONResponse:
        if not who.may("admin"):
            raise StarletteHTTPException(403, "only an admin key may list keys")
        listing = keys.listing() if keys is not None else []
        return JSONResponse([k for k in listing if who.library == ALL or k["library"] == who.library])

    add_retrieval(app, principal, opened, open_access, ERRORS)

    @app.get("/healthz", response_model=Health, responses={503: ERRORS[503]},
             summary="Whether the index can be searched")
    def healthz() -> JSONResponse:
        try:
            found = [lib.health() for lib in live.values()]
        except KBError as e:
            return fail(503, "index unavailable", str(e))
        return JSONResponse({"status": "ok", "generation": found[0].version if len(found) == 1 else
                             ",".join(f"{n}:{h.version}" for n, h in zip(live, found)),
                             "passages": sum(h.count for h in found)})
    return app


def merged_search(libraries: list[tuple[str, Searcher]], q: str, k: int = 10, mode: str = "hybrid",
                  filters: Filters | None = None, style: str = "short", min_score: float | None = None) -> dict:
    """One question asked of several libraries: every library's hits merged by their calibrated score
    (the same 0-1 scale in each), each naming its library; weak only when every library's answer is."""
    answers = [(name, search_response(s, q, k=k, mode=mode, filters=filters, style=style, min_score=min_score))
               for name, s in libraries]
    hits = [{**h.to_dict(), "library": name} for name, a in answers for h in a.hits]
    hits.sort(key=lambda h: (-h["score"], h["library"], h["id"]))
    out = answers[0][1].to_dict()
    out["hits"] = hits[:k]
    out["libraries"] = [name for name, _ in answers]
    out["low_confidence"] = all(a.low_confidence for _, a in answers) or None
    out["empty_because"] = None if hits else out.get("empty_because")
    return out


def _library_routes(app: FastAPI, prefix: str, resolve) -> None:
    """The endpoints of one library, at ``prefix`` (``""``: the single-library paths), the library
    given by the dependency ``resolve`` (which checks the key)."""
    lib = Depends(resolve)

    @app.get(prefix + "/passages/{passage_id}", response_model=PassageContext, responses=ERRORS,
             summary="A passage with its context (like `kb show`)")
    def passage(passage_id: Annotated[str, Path(max_length=200)],
                context: Annotated[int, Query(ge=0, le=20)] = 1, searcher: Searcher = lib) -> JSONResponse:
        return JSONResponse(_plain(searcher.show(passage_id, context=context)))

    @app.get(prefix + "/passages/{passage_id}/related", response_model=RelatedPassages, responses=ERRORS,
             summary="Passages nearest to this one (not itself, its parent or children)")
    def related(passage_id: Annotated[str, Path(max_length=200)], filters: QueryFilters,
                k: Annotated[int, Query(ge=1, le=MAX_K)] = 5, searcher: Searcher = lib) -> JSONResponse:
        hits = searcher.related(passage_id, k=k, filters=filters)
        return JSONResponse({"passage": passage_id, "hits": [asdict(h) for h in hits]})

    @app.get(prefix + "/documents", response_model=DocumentPage, responses=ERRORS,
             summary="The documents, a page at a time")
    def documents(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  searcher: Searcher = lib) -> JSONResponse:
        docs = searcher.documents()
        return JSONResponse({"total": len(docs), "offset": offset, "limit": limit,
                             "documents": [asdict(d) for d in docs[offset: offset + limit]]})

    @app.get(prefix + "/documents/{doc_id}", response_model=FullDocument, responses=ERRORS,
             summary="One document: its card, full text and passages")
    def document(doc_id: Annotated[str, Path(max_length=200)], searcher: Searcher = lib) -> JSONResponse:
        return JSONResponse(_plain(searcher.document(doc_id)))

    @app.get(prefix + "/stats", response_model=dict[str, Any], responses=ERRORS,
             summary="What the index holds (like `kb stats`)")
    def stats(searcher: Searcher = lib) -> JSONResponse:
        s = searcher.stats()
        s.pop("index", None)  # a server path
        s.pop("corpus", None)
        return JSONResponse(s)

    if prefix:
        @app.get(prefix + "/search", response_model=SearchResponse, responses=ERRORS,
                 summary="The passages that answer a question, in this library")
        def search_in(q: Annotated[str, Query(min_length=1, max_length=100_000, description=QUESTION_HELP)],
                      filters: QueryFilters, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                      mode: Mode = "hybrid", cite: Annotated[str, Query(pattern="^(short|gbt7714|apa)$")] = "short",
                      min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
                      facets: Annotated[bool, Query(description=FACETS_HELP)] = False, searcher: Searcher = lib):
            response = search_response(searcher, q, k=k, mode=mode, filters=filters, style=cite, min_score=min_score,
                                       facets=facets)
            return JSONResponse(response.to_dict())


@dataclass
class Writer:
    """A write to one library by one key: where its documents are, its re-indexing, its audit log."""

    library: str
    searcher: Searcher | None  # None: the library has no index yet
    who: Principal
    docs: str | None
    reindexer: Reindexer
    home: FsPath | None  # KB_HOME, whose audit log records the write

    def folder(self) -> FsPath:
        corpus = self.searcher.manifest.get("corpus") if self.searcher is not None else None
        return document_folder(corpus, self.docs)

    def audit(self, action: str, obj: str = "") -> None:
        if self.home is not None:
            audit_write(self.home, self.who.name, self.library, action, obj)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary", "maxLength": MAX_UPLOAD_BYTES}}}}}


def _status(reindexer: Reindexer) -> dict[str, Any]:
    status = reindexer.status()
    for field in ("summary", "error"):
        if status.get(field):
            status[field] = redact_paths(status[field])
    if status.get("warnings"):
        status["warnings"] = [redact_paths(w) for w in status["warnings"]]
    return status


def _write_routes(app: FastAPI, prefix: str, write, indexing) -> None:
    """Upload, remove and re-index (a write key's), and how indexing stands (a read key's), at
    ``prefix``. A write answers 202 at once: the library is re-indexed in the background, and the
    next search after it finishes sees the change (``GET …/indexing`` says when)."""
    may_write = Depends(write)

    @app.post(prefix + "/documents", response_model=WriteAnswer, status_code=202, responses=ERRORS,
              openapi_extra=UPLOAD_BODY,
              summary=f"Add a document (the body: the file's bytes, at most {UPLOAD_LIMIT_MB} MB), then re-index")
    async def upload(request: Request,
                     filename: Annotated[str, Query(min_length=1, max_length=255,
                                                    description="The file's name; its suffix gives its type: "
                                                                + " ".join(UPLOAD_SUFFIXES))],
                     w: Writer = may_write) -> JSONResponse:
        data = await request.body()
        folder = w.folder()
        saved = save_upload(folder, filename, data, max_bytes=MAX_UPLOAD_BYTES, suffixes=UPLOAD_SUFFIXES)
        name = saved.relative_to(folder).as_posix()
        w.audit("document.upload", name)
        w.reindexer.request(folder)
        return JSONResponse({"saved": name, "indexing": _status(w.reindexer)}, status_code=202)

    @app.delete(prefix + "/documents/{doc_id}", response_model=WriteAnswer, status_code=202, responses=ERRORS,
                summary="Remove a document (moved to the library's .kb-trash folder, never deleted), then re-index")
    def remove(doc_id: Annotated[str, Path(max_length=200)], w: Writer = may_write) -> JSONResponse:
        if w.searcher is None:
            raise UnknownPassage(f"no document {doc_id!r}: the library has no index yet")
        path = w.searcher.document_info(doc_id).path
        folder = w.folder()
        remove_document(folder, path)
        w.audit("document.remove", path)
        w.reindexer.request(folder, prune=True)
        return JSONResponse({"removed": path, "indexing": _status(w.reindexer)}, status_code=202)

    @app.post(prefix + "/reindex", response_model=WriteAnswer, status_code=202, responses=ERRORS,
              summary="Bring the index in line with the library's document folder (in the background)")
    def reindex(w: Writer = may_write) -> JSONResponse:
        folder = w.folder()
        w.audit("library.reindex")
        w.reindexer.request(folder)
        return JSONResponse({"indexing": _status(w.reindexer)}, status_code=202)

    @app.get(prefix + "/indexing", response_model=Indexing, responses=ERRORS,
             summary="How the library's re-indexing stands (idle, queued, running, done or failed)")
    def indexing_status(reindexer: Reindexer = Depends(indexing)) -> JSONResponse:
        return JSONResponse(_status(reindexer))


def _bound_requests(app: FastAPI, fail, limiter: RateLimiter | None) -> None:
    """Refuse bodies over MAX_BODY_BYTES unread, and clients over the rate limit."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return fail(400, "bad request", "Content-Length is not a number")
        limit = MAX_UPLOAD_BYTES if request.method == "POST" and request.url.path.endswith("/documents") \
            else MAX_BODY_BYTES
        if length > limit:
            return fail(413, "request too large", f"at most {limit} bytes")
        if "chunked" in request.headers.get("transfer-encoding", "").lower():  # a body of unknown length
            return fail(411, "length required", f"send Content-Length (at most {MAX_BODY_BYTES} bytes)")
        if limiter is not None and not limiter.allow(request.client.host if request.client else "?"):
            return fail(429, "too many requests", f"at most {limiter.per_minute} requests a minute")
        return await call_next(request)


def _answer_errors(app: FastAPI, fail) -> None:
    """Every error as JSON ``{"error", "detail"}`` with its status: never a traceback or a path."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        names = {401: "unauthorized", 403: "forbidden", 404: "not found", 405: "method not allowed"}
        response = fail(exc.status_code, names.get(exc.status_code, "error"), str(exc.detail))
        if exc.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            field = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{field}: {err.get('msg', 'invalid')}")
        return fail(422, "invalid parameter", "; ".join(parts))

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable):
        return fail(503, "index unavailable", str(exc))

    @app.exception_handler(IndexDamaged)
    async def damaged(request: Request, exc: IndexDamaged):  # found by a query: the index, not the request
        request.app.state.library.note_damage(None, exc)  # /healthz says so from now on
        return fail(503, "index unavailable", str(exc))

    @app.exception_handler(UnknownPassage)
    async def unknown(request: Request, exc: UnknownPassage):
        return fail(404, "not found", str(exc))

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError):
        return fail(422, "invalid parameter", str(exc))

    @app.exception_handler(EmptyQuery)
    async def empty(request: Request, exc: EmptyQuery):
        return fail(422, "invalid parameter", "q: " + str(exc))

    @app.exception_handler(KBError)
    async def kb_error(request: Request, exc: KBError):
        return fail(400, "bad request", str(exc))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):  # a bug: one line, no traceback, no path
        return fail(500, "internal error", type(exc).__name__)


def _plain(obj: Any) -> Any:
    """Views (dataclasses) inside plain dicts and lists, as JSON-ready values."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj
