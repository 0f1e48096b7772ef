"""Synthetic Chinese indexes of any size, built through kb's own SegmentWriter.

Passages are sentences of the sample corpus and of ../shared/eval (when present)
recombined at random; vectors are random unit vectors, so no model time is spent.
Each distinct sentence is tokenised once (jieba), so a million passages build in minutes.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np

from kb.embed.embedders import HashEmbedder
from kb.errors import KBError
from kb.index.indexer import pipeline_settings
from kb.index.local import publish_generation
from kb.read.documents import content_hash
from kb.split.passages import DEFAULT_MAX_CHARS
from kb.store.local.layout import IndexDir, now_iso, read_manifest
from kb.store.local.segments import SegmentWriter
from kb.text.process import sentence_spans, tokenize

ROOT = Path(__file__).resolve().parent.parent
SHARED_EVAL = ROOT.parent / "shared" / "eval"
RESULTS = ROOT / "benchmarks" / "results"


def sentence_pool(limit: int = 60000) -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "corpus").glob("*.txt")]
    for f in sorted(SHARED_EVAL.glob("*/passages.jsonl")):
        with open(f, encoding="utf-8") as fh:
            texts.extend(json.loads(line)["text"] for line in fh if line.strip())
    pool: list[str] = []
    for t in texts:
        for s, e in sentence_spans(t):
            if 8 <= e - s <= 200:
                pool.append(t[s:e])
    return list(dict.fromkeys(pool))[:limit]


def questions(n: int, seed: int = 0) -> list[str]:
    qs: list[str] = []
    for f in sorted(SHARED_EVAL.glob("*/queries.jsonl")):
        with open(f, encoding="utf-8") as fh:
            qs.extend(q for q in (json.loads(line)["question"] for line in fh if line.strip()) if q.strip())
    if not qs:
        qs = [s[:20] for s in sentence_pool(2000)]
    rng = random.Random(seed)
    return rng.sample(qs, min(n, len(qs)))


def random_unit(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


SOURCES = 1000  # documents are spread over this many sources


def build(index_dir: Path, n_passages: int, dim: int = 384, per_doc: int = 20, seed: int = 0,
          vector_kind: str = "auto", corpus: Path | None = None, timings: dict | None = None) -> dict:
    """Write a complete one-segment index of ``n_passages`` synthetic passages. With
    ``corpus``, each document is also written there as a file (its stat and hash recorded
    as `kb index` records them), so that `kb index` can then update the index in place.
    Returns timings."""
    t0 = time.perf_counter()
    pool = sentence_pool()
    tok_cache = [tokenize(s) for s in pool]
    t_tok = time.perf_counter() - t0
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    idx = IndexDir(index_dir)
    idx.root.mkdir(parents=True, exist_ok=True)
    spec = HashEmbedder(dim).spec()
    writer = SegmentWriter(idx.next_segment(), dim)
    stamp = now_iso()
    old = time.time() - 3600  # files look settled (not "racily clean") to the next scan
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
    made = 0
    doc_no = 0
    while made < n_passages:
        count = min(per_doc, n_passages - made)
        doc_id = f"synth{doc_no:07d}"
        title = f"合成文档{doc_no}"
        rows, tokens, texts = [], [], []
        pos = len(title) + 2
        for j in range(count):
            picks = [rng.randrange(len(pool)) for _ in range(rng.randint(1, 4))]
            text = "".join(pool[i] for i in picks)
            toks = [t for i in picks for t in tok_cache[i]]
            rows.append({"id": f"{doc_id}:{j}", "doc_id": doc_id, "kind": "paragraph",
                         "heading_path": json.dumps([title], ensure_ascii=False), "text": text,
                         "start": pos, "end": pos + len(text), "orig_start": pos, "orig_end": pos + len(text),
                         "parent": None, "ordinal": j, "vkey": f"{doc_id}:{j}", "tokens": " ".join(toks)})
            tokens.append(toks)
            texts.append(text)
            pos += len(text) + 2
        body = title + "\n\n" + "\n\n".join(texts) + "\n"
        path = f"{doc_id}.txt"
        size = mtime = ctime = 0
        digest = doc_id
        if corpus is not None:
            raw = body.encode("utf-8")
            f = corpus / path
            f.write_bytes(raw)
            os.utime(f, (old, old))
            st = f.stat()
            size, mtime, ctime, digest = st.st_size, st.st_mtime_ns, st.st_ctime_ns, content_hash(raw)
        meta = json.dumps({"source": f"来源{doc_no % SOURCES:03d}"}, ensure_ascii=False)  # filters: 0.1 % each
        doc = {"doc_id": doc_id, "path": path, "title": title, "meta": meta,
               "text": body, "offsets": json.dumps({"norm": [0], "orig": [0], "length": pos, "orig_length": pos}),
               "content_hash": digest, "encoding": "utf-8", "format": "txt", "size": size, "mtime_ns": mtime,
               "ctime_ns": ctime, "n_passages": count, "indexed_at": stamp}
        writer.add(doc, rows, random_unit(count, dim, nrng), tokens)
        made += count
        doc_no += 1
    t_rows = time.perf_counter() - t0
    entry = writer.finish(vector_kind, created=stamp, timings=timings)
    t_fin = time.perf_counter()
    publish_generation(idx, {"created": stamp, "corpus": str(corpus or "synthetic"), "embedder": spec,
                             "pipeline": pipeline_settings(DEFAULT_MAX_CHARS) if corpus else {"synthetic": True},
                             "scan_started_ns": time.time_ns()}, [entry], {}, {})
    return {"passages": made, "documents": doc_no, "tokenize_pool_s": round(t_tok, 1),
            "rows_s": round(t_rows, 1), "finish_s": round(t_fin - t0 - t_rows, 1),
            "total_s": round(time.perf_counter() - t0, 1)}


def ensure(n_passages: int, dim: int = 384, vector_kind: str = "auto", rebuild: bool = False) -> tuple[Path, dict]:
    d = RESULTS / f"synth-{n_passages}-{dim}-{vector_kind}"
    try:
        current = IndexDir(d).current()
        ok = current is not None and read_manifest(current) is not None
    except KBError:  # an older format: build again
        ok = False
    if rebuild or not ok:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
        return d, build(d, n_passages, dim, vector_kind=vector_kind)
    return d, {"cached": True}
