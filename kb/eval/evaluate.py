"""``kb eval``: retrieval quality on question -> passage sets.

Two dataset shapes:

- ``passages.jsonl`` ``{id, title, text}`` + ``queries.jsonl`` ``{id, question, positives,
  answer}``: the passages are indexed as documents through the normal pipeline (title,
  blank line, text), cached under ``index/eval/<name>-<hash>/``; a hit counts for the
  dataset passage its document came from, at the rank where that passage first appears.
  Metrics: hit@1/5/10, MRR@10, nDCG@10, latency p50/p95.
- ``queries.jsonl`` ``{id, question, expect}`` alone (``seed_dev``): asked against an
  existing index (the project's own corpus); passes when ``expect`` appears in the
  heading path or text of the first passage.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import KBError
from kb.progress import progress_bar
from kb.records import SEARCH_MODES

MODES = SEARCH_MODES
CUTOFFS = (1, 5, 10)

# --------------------------------------------------------------------------- metrics (pure)


def hit_at(ranked: Sequence[str], positives: set[str], k: int) -> float:
    return 1.0 if any(r in positives for r in ranked[:k]) else 0.0


def mrr_at(ranked: Sequence[str], positives: set[str], k: int = 10) -> float:
    for i, r in enumerate(ranked[:k], start=1):
        if r in positives:
            return 1.0 / i
    return 0.0


def ndcg_at(ranked: Sequence[str], positives: set[str], k: int = 10) -> float:
    """Binary-relevance nDCG: DCG = sum rel_i / log2(i + 1) over ranks i = 1..k."""
    dcg = sum(1.0 / math.log2(i + 1) for i, r in enumerate(ranked[:k], start=1) if r in positives)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(positives), k) + 1))
    return dcg / ideal if ideal > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def first_occurrences(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------- datasets


@dataclass
class Dataset:
    name: str
    path: Path
    queries: list[dict[str, Any]]
    passages: list[dict[str, Any]] | None  # None: the "expect" shape

    @property
    def kind(self) -> str:
        return "passages" if self.passages is not None else "expect"

    def titles(self) -> dict[str, str]:
        """``{passage id: title}`` (stripped; "" for a passage without one)."""
        return {str(p["id"]): (p.get("title") or "").strip() for p in self.passages or []}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise KBError(f"{path}:{n}: not valid JSON ({e.msg})") from e
    return rows


def load_dataset(directory: str | Path) -> Dataset:
    d = Path(directory)
    qpath = d / "queries.jsonl"
    if not qpath.is_file():
        raise KBError(f"{d}/ has no queries.jsonl — a dataset folder holds queries.jsonl "
                      "(and passages.jsonl unless its queries carry an 'expect' phrase)")
    queries = _read_jsonl(qpath)
    ppath = d / "passages.jsonl"
    passages = _read_jsonl(ppath) if ppath.is_file() else None
    if passages is None and not all("expect" in q for q in queries):
        raise KBError(f"{d}/ has no passages.jsonl and its queries have no 'expect' phrase")
    for q in queries:
        if "question" not in q:
            raise KBError(f"{qpath}: every query needs a 'question' (query {q.get('id')!r} has none)")
    return Dataset(d.resolve().name, d, queries, passages)


def dataset_hash(ds: Dataset, model: str | None, max_chars: int) -> str:
    h = hashlib.sha1()
    h.update((ds.path / "passages.jsonl").read_bytes())
    h.update(f"\x00{model or 'default'}\x00{max_chars}".encode())
    return h.hexdigest()[:12]


def eval_cache(ds: Dataset, model: str | None = None) -> Path:
    """Where ``kb eval`` keeps a passage set's index and query vectors by default."""
    from kb.split.passages import DEFAULT_MAX_CHARS

    return Path("index") / "eval" / f"{ds.name}-{dataset_hash(ds, model, DEFAULT_MAX_CHARS)}"


def prepare_index(ds: Dataset, cache: Path, model: str | None, max_chars: int, progress: bool,
                  log=None, store: str | None = None):
    """Write the dataset's passages as documents and index them (incrementally).
    Returns the index folder and ``{document path: dataset passage id}``."""
    from kb.index import update_index

    corpus = cache / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    path_to_id: dict[str, str] = {}
    for i, p in enumerate(ds.passages or []):
        name = f"p{i:06d}.txt"
        title = (p.get("title") or "").strip()
        content = f"{title}\n\n{p['text']}" if title else p["text"]
        target = corpus / name
        data = content.encode("utf-8")
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
        path_to_id[name] = str(p["id"])
    (cache / "ids.json").write_text(json.dumps(path_to_id, ensure_ascii=False), encoding="utf-8")
    target = store or cache / "index"
    # a store reuses the vectors of the local evaluation index when there is one
    reuse = cache / "index" if store and (cache / "index" / "CURRENT").exists() else None
    report = update_index(corpus, target, model=model, max_chars=max_chars, progress=progress,
                          warn=lambda m: None, prune=True, reuse_vectors=reuse)
    if log:
        log(f"index {target}: {report.summary()}")
    return target, path_to_id, report


# --------------------------------------------------------------------------- running


class QueryVectors:
    """Query embeddings, each measured once (single query, as a user would send it) and
    cached on disk beside the eval index, so the modes and later runs share them."""

    def __init__(self, searcher, path: Path | None) -> None:
        self.searcher = searcher
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        self.ms: dict[str, float] = {}
        self.key = json.dumps(searcher.spec, sort_keys=True)
        if path and path.exists():
            data = np.load(path, allow_pickle=False)
            if str(data["key"]) == self.key:
                for q, v, ms in zip(data["queries"].tolist(), data["vectors"], data["ms"]):
                    self.vectors[q] = v
                    self.ms[q] = float(ms)

    def get(self, query: str) -> tuple[np.ndarray, float]:
        if query not in self.vectors:
            t0 = time.perf_counter()
            self.vectors[query] = self.searcher.embedder.embed_query(query)
            self.ms[query] = (time.perf_counter() - t0) * 1000
        return self.vectors[query], self.ms[query]

    def save(self) -> None:
        if not self.path or not self.vectors:
            return
        qs = list(self.vectors)
        np.savez(self.path, key=np.array(self.key), queries=np.array(qs),
                 vectors=np.vstack([self.vectors[q] for q in qs]), ms=np.array([self.ms[q] for q in qs]))


def _bar(enabled: bool, total: int, desc: str):
    return progress_bar(enabled, total, desc, unit="query", leave=False)


def run_mode(searcher, queries: list[dict[str, Any]], mode: str, qvecs: QueryVectors, depth: int,
             progress: bool, rerank=None) -> tuple[list[list[Any]], list[float]]:
    """Hits of every query, and each query's latency in ms (search + its embedding)."""
    results, latencies = [], []
    bar = _bar(progress, len(queries), mode)
    for q in queries:
        embed_ms = 0.0
        if not q["question"].strip():  # an empty question finds nothing: a miss, not a crash
            results.append([])
            latencies.append(0.0)
            if bar is not None:
                bar.update(1)
            continue
        if mode != "lexical":
            vec, embed_ms = qvecs.get(q["question"])
            searcher.prime_query(q["question"], vec)
        t0 = time.perf_counter()
        hits = searcher.search(q["question"], k=depth, mode=mode, rerank=rerank)
        latencies.append((time.perf_counter() - t0) * 1000 + embed_ms)
        results.append(hits)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results, latencies


def evaluate(directory: str | Path, modes: Sequence[str] = MODES, k: int = 10, index: str | Path | None = None,
             model: str | None = None, corpus: str | Path | None = None, progress: bool = False,
             log=None, rerank=None, store: str | None = None) -> dict[str, Any]:
    from kb.search.searcher import Searcher
    from kb.split.passages import DEFAULT_MAX_CHARS

    ds = load_dataset(directory)
    # Several hits may come from one dataset passage; retrieving 3x as many hits ranks at
    # least 10 distinct passages (each at its best hit), as passage-to-document evaluation does.
    depth = 3 * max(k, 10)
    if ds.kind == "passages":
        cache = Path(index) if index else eval_cache(ds, model)
        index_dir, path_to_id, report = prepare_index(ds, cache, model, DEFAULT_MAX_CHARS, progress, log, store)
        qcache = cache / "queries.npz"
    else:
        path_to_id, report = {}, None
        if corpus is not None:
            from kb.index import update_index

            cache = Path(index) if index else Path("index") / "eval" / f"{ds.name}-corpus"
            index_dir = store or cache / "index"
            report = update_index(corpus, index_dir, model=model, progress=progress, warn=lambda m: None, prune=True)
        else:
            index_dir = store or (Path(index) if index else Path("index"))
        qcache = None
    searcher = Searcher.load(index_dir, model=model)
    searcher.warm()
    qvecs = QueryVectors(searcher, qcache)
    out: dict[str, Any] = {
        "dataset": ds.name, "passages": len(ds.passages) if ds.passages is not None else None,
        "queries": len(ds.queries), "index_passages": searcher.count,
        "embedder": searcher.spec, "index": str(index_dir),
        "indexing": {"embedded": report.embedded, "reused": report.reused, "seconds": round(report.seconds, 2)}
        if report else None,
        "modes": {},
    }
    runs = [(mode, mode, None) for mode in modes]
    if rerank is not None:
        runs += [(f"{mode}+rerank", mode, rerank) for mode in modes if mode == "hybrid"]
    for name, mode, reranker in runs:
        results, latencies = run_mode(searcher, ds.queries, mode, qvecs, depth, progress, reranker)
        stats: dict[str, Any]
        if ds.kind == "passages":
            stats = _passage_metrics(ds, results, path_to_id)
            stats["by_type"] = _by_type(ds, results, path_to_id, searcher)
        else:
            stats = _expect_metrics(ds, results)
        stats["p50_ms"] = round(percentile(latencies, 50), 2)
        stats["p95_ms"] = round(percentile(latencies, 95), 2)
        out["modes"][name] = stats
    if ds.kind == "passages":
        related = related_metrics(ds, searcher, path_to_id)
        if related:
            out["related"] = related
    qvecs.save()
    return out


SHORT_QUESTION = 12  # characters: a keyword query or a short question, below; a full question above


def _by_type(ds: Dataset, results, path_to_id: dict[str, str], searcher) -> dict[str, Any]:
    """MRR@10 and hit@1 by kind of question, so that users see where retrieval fails:
    short / long questions, and questions with / without a word the index has."""

    groups: dict[str, list[tuple[float, float]]] = {}
    for q, hits in zip(ds.queries, results):
        ranked = first_occurrences([path_to_id.get(h.path, h.path) for h in hits])
        positives = {str(p) for p in q.get("positives", [])}
        score = (mrr_at(ranked, positives, 10), hit_at(ranked, positives, 1))
        question = q["question"].strip()
        indexed = any(searcher.has_term(t) for t in searcher.tokenize(question))
        for name in ("short" if len(question) <= SHORT_QUESTION else "long",
                     "with_indexed_terms" if indexed else "without_indexed_terms"):
            groups.setdefault(name, []).append(score)
    return {name: {"queries": len(v), "mrr@10": round(float(np.mean([s[0] for s in v])), 4),
                   "hit@1": round(float(np.mean([s[1] for s in v])), 4)} for name, v in sorted(groups.items())}


def related_metrics(ds: Dataset, searcher, path_to_id: dict[str, str], k: int = 5,
                    limit: int = 500) -> dict[str, Any] | None:
    """How well ``related`` finds the other passages of an article, where a dataset splits
    articles into several passages titled alike (DRCD): precision@k = share of the first k
    other dataset passages that come from the same article; recall@k = share of the article's
    other passages among them. A floor, not the whole story: related passages from other
    articles on the topic are welcome. None when no article has two passages."""
    title_of = ds.titles()
    members: dict[str, set[str]] = {}
    for pid, title in title_of.items():
        if title:
            members.setdefault(title, set()).add(pid)
    id_to_path = {v: k for k, v in path_to_id.items()}
    by_doc = {d["path"]: d["doc_id"] for d in searcher.docs}
    precisions, recalls = [], []
    for pid, title in title_of.items():
        others = members.get(title, set()) - {pid}
        doc_id = by_doc.get(id_to_path.get(pid, ""))
        if not others or doc_id is None:
            continue
        passages = searcher.document(doc_id)["passages"]
        focus = next((p for p in passages if p["kind"] == "paragraph"), passages[0] if passages else None)
        if focus is None:
            continue
        found = [x for x in first_occurrences([path_to_id.get(h.path, h.path)
                                               for h in searcher.related(focus["id"], k=3 * k)]) if x != pid][:k]
        if not found:
            continue
        precisions.append(sum(title_of.get(x) == title for x in found) / len(found))
        recalls.append(len(others & set(found)) / len(others))
        if len(precisions) >= limit:
            break
    if not precisions:
        return None
    return {f"precision@{k}": round(float(np.mean(precisions)), 4), f"recall@{k}": round(float(np.mean(recalls)), 4),
            "queries": len(precisions)}


def _passage_metrics(ds: Dataset, results, path_to_id: dict[str, str]) -> dict[str, Any]:
    sums = {f"hit@{c}": 0.0 for c in CUTOFFS} | {"mrr@10": 0.0, "ndcg@10": 0.0}
    for q, hits in zip(ds.queries, results):
        ranked = first_occurrences([path_to_id.get(h.path, h.path) for h in hits])
        positives = {str(p) for p in q.get("positives", [])}
        for c in CUTOFFS:
            sums[f"hit@{c}"] += hit_at(ranked, positives, c)
        sums["mrr@10"] += mrr_at(ranked, positives, 10)
        sums["ndcg@10"] += ndcg_at(ranked, positives, 10)
    n = max(len(ds.queries), 1)
    return {key: round(v / n, 4) for key, v in sums.items()}


def _unspaced(text: str) -> str:
    return "".join(text.split())


def _holds(hit, expect: str) -> bool:
    """The hit's text or section path holds ``expect`` (white space aside: a line break in a file
    is not a different answer)."""
    return expect in _unspaced(hit.text) or any(expect in _unspaced(h) for h in hit.heading_path)


def _expect_metrics(ds: Dataset, results) -> dict[str, Any]:
    passed = passed5 = 0
    failures = []
    for q, hits in zip(ds.queries, results):
        expect = _unspaced(q["expect"])
        ok = bool(hits) and _holds(hits[0], expect)
        passed += ok
        passed5 += any(_holds(h, expect) for h in hits[:5])
        if not ok:
            failures.append(q.get("id", q["question"]))
    n = max(len(ds.queries), 1)
    return {"top1": round(passed / n, 4), "top1_passed": passed, "top5": round(passed5 / n, 4),
            "top5_passed": passed5, "failures": failures}


def format_table(result: dict[str, Any]) -> str:
    emb = result["embedder"]
    head = (f"dataset {result['dataset']} · {result['queries']} queries"
            + (f" · {result['passages']} passages ({result['index_passages']} indexed units)"
               if result["passages"] is not None else f" · {result['index_passages']} indexed passages")
            + f" · {emb['backend']} {emb['model']} ({emb['dim']}-d)")
    lines = [head]
    modes = result["modes"]
    if not modes:
        return head
    first = next(iter(modes.values()))
    if "top1" in first:
        lines.append(f"{'mode':<9}{'top-1':>8}{'passed':>9}{'p50 ms':>9}{'p95 ms':>9}  failures")
        for mode, s in modes.items():
            lines.append(f"{mode:<9}{s['top1']:>8.3f}{s['top1_passed']:>9}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}  "
                         + (", ".join(map(str, s["failures"])) or "-"))
    else:
        cols = ["hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10"]
        lines.append(f"{'mode':<9}" + "".join(f"{c:>9}" for c in cols) + f"{'p50 ms':>9}{'p95 ms':>9}")
        for mode, s in modes.items():
            lines.append(f"{mode:<9}" + "".join(f"{s[c]:>9.3f}" for c in cols)
                         + f"{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}")
        hybrid = modes.get("hybrid") or first
        for name, g in hybrid.get("by_type", {}).items():
            lines.append(f"  {name:<22} {g['queries']:>5} questions  mrr@10 {g['mrr@10']:.3f}  hit@1 {g['hit@1']:.3f}")
    if result.get("related"):
        r = result["related"]
        lines.append(f"related: precision@5 {r['precision@5']:.3f}, recall@5 {r['recall@5']:.3f} "
                     f"(other passages of the same article, {r['queries']} passages)")
    return "\n".join(lines)
