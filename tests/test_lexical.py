from __future__ import annotations

import random

import numpy as np
import pytest

from kb.rank.fusion import min_max, rrf, rrf_max
from kb.store.bm25 import top_k
from kb.store.local.postings import Postings
from kb.store.local.segments import SegmentReader, SegmentWriter
from kb.store.local.snapshot import LocalSnapshot


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    vocab = [f"词{i}" for i in range(80)]
    return [[rng.choice(vocab) for _ in range(rng.randrange(1, 40))] for _ in range(300)]


def segment(folder, name, token_lists, first=0):
    """A segment whose documents are single passages with these tokens (zero vectors)."""
    w = SegmentWriter(folder / name, 4)
    for i, toks in enumerate(token_lists, start=first):
        doc = {"doc_id": f"d{i}", "path": f"d{i:04d}.txt", "title": "", "meta": "{}", "text": "", "offsets": "{}",
               "content_hash": str(i), "n_passages": 1}
        row = {"id": f"d{i}:0", "doc_id": f"d{i}", "kind": "paragraph", "heading_path": "[]", "text": " ".join(toks),
               "parent": None, "ordinal": 0, "vkey": str(i), "tokens": " ".join(toks)}
        w.add(doc, [row], np.zeros((1, 4), np.float32))
    w.finish("flat")
    return SegmentReader(folder / name)


def test_bm25_matches_the_bm25s_reference(tmp_path, corpus):
    bm25s = pytest.importorskip("bm25s")
    view = LocalSnapshot([segment(tmp_path, "seg-000001", corpus)], [np.zeros(0, np.int64)])
    ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    ref.index(corpus, show_progress=False)
    for query in (["词1"], ["词1", "词7", "词33"], ["词5", "词5", "词79"], ["没有的词"]):
        # each distinct query term counts once in kb (a repeated word is no stronger evidence)
        ids, scores = ref.retrieve([list(dict.fromkeys(query))], k=len(corpus), show_progress=False)
        expected = np.zeros(len(corpus), dtype=np.float32)
        expected[ids[0]] = scores[0]
        # ours keeps Lucene's (k1 + 1) factor in the term weight: same ranking, scaled scores
        assert np.allclose(view.bm25(query, 1.2, 0.75), expected * 2.2, atol=1e-4)


def test_segments_with_deletions_score_exactly_as_one_fresh_segment(tmp_path, corpus):
    """Corpus-wide statistics (N, df, average length) over live rows: bit-identical scores."""
    parts = [corpus[:120], corpus[120:250], corpus[250:]]
    segs = [segment(tmp_path, f"seg-00000{n}", p, first) for n, (p, first) in
            enumerate(zip(parts, (0, 120, 250)), start=1)]
    dead = [np.array([3, 50, 51], np.int64), np.zeros(0, np.int64), np.array([0, 49], np.int64)]
    view = LocalSnapshot(segs, dead)
    gone = {3, 50, 51, 250, 299}
    live_ids = [i for i in range(300) if i not in gone]
    fresh = LocalSnapshot([segment(tmp_path, "seg-000009", [corpus[i] for i in live_ids])],
                           [np.zeros(0, np.int64)])
    assert view.lexical_stats() == fresh.lexical_stats() and view.n_live == 295
    for query in (["词1"], ["词1", "词7", "词33"], ["词5", "词79", "没有的词"]):
        seg_scores, fresh_scores = view.bm25(query, 1.2, 0.75), fresh.bm25(query, 1.2, 0.75)
        assert np.array_equal(seg_scores[live_ids], fresh_scores)  # exactly, not approximately
        assert not seg_scores[sorted(gone)].any()  # deleted rows never score
        assert all(view.idf(t) == fresh.idf(t) for t in query)


def test_postings_save_load_roundtrip(tmp_path, corpus):
    ours = Postings.build(corpus)
    ours.save(tmp_path / "p")
    again = Postings.load(tmp_path / "p")
    assert again.vocab == ours.vocab and np.array_equal(again.lengths, [len(t) for t in corpus])
    rows, tf = again.postings("词3")
    assert list(rows) == [i for i, t in enumerate(corpus) if "词3" in t]
    assert list(tf) == [corpus[i].count("词3") for i in rows]
    assert again.postings("没有的词") is None


def test_top_k_is_a_sorted_brute_force():
    scores = np.random.default_rng(0).random(300).astype(np.float32)
    scores[::7] = 0
    idx, vals = top_k(scores, 10)
    expected = np.argsort(-scores, kind="stable")[:10]
    assert np.allclose(vals, scores[expected]) and list(vals) == sorted(vals, reverse=True)
    mask = np.zeros(len(scores), dtype=bool)
    mask[::2] = True
    idx, _ = top_k(scores, 10, mask)
    assert all(i % 2 == 0 for i in idx)
    assert len(top_k(np.zeros(5, np.float32), 3)[0]) == 0  # nothing matched: nothing returned


def test_fusion_helpers():
    parts = rrf({"dense": [1, 2, 3], "lexical": [3, 1]}, k=60)
    assert parts[1] == {"dense": 1 / 61, "lexical": 1 / 62} and parts[2] == {"dense": 1 / 62}
    assert sum(parts[1].values()) / rrf_max(["dense", "lexical"]) < 1.0
    assert rrf({"a": [5]}, k=0, weights={"a": 2.0})[5] == {"a": 2.0}
    assert min_max([1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5] and min_max([2.0, 2.0]) == [1.0, 1.0]
