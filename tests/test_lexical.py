from __future__ import annotations

import random

import numpy as np
import pytest

from kb.fusion import min_max, rrf, rrf_max
from kb.lexical import BM25Index, top_k


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    vocab = [f"词{i}" for i in range(80)]
    return [[rng.choice(vocab) for _ in range(rng.randrange(1, 40))] for _ in range(300)]


def test_bm25_matches_the_bm25s_reference(corpus):
    bm25s = pytest.importorskip("bm25s")
    ours = BM25Index.build(corpus, k1=1.2, b=0.75)
    ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    ref.index(corpus, show_progress=False)
    for query in (["词1"], ["词1", "词7", "词33"], ["词5", "词5", "词79"], ["没有的词"]):
        # each distinct query term counts once in kb (a repeated word is no stronger evidence)
        ids, scores = ref.retrieve([list(dict.fromkeys(query))], k=len(corpus), show_progress=False)
        expected = np.zeros(len(corpus), dtype=np.float32)
        expected[ids[0]] = scores[0]
        # ours keeps Lucene's (k1 + 1) factor in the term weight: same ranking, scaled scores
        assert np.allclose(ours.scores(query), expected * 2.2, atol=1e-4)


def test_bm25_save_load_roundtrip(tmp_path, corpus):
    ours = BM25Index.build(corpus)
    ours.save(tmp_path / "bm25")
    again = BM25Index.load(tmp_path / "bm25")
    assert again.n_docs == len(corpus) and again.vocab == ours.vocab
    assert np.array_equal(again.scores(["词3", "词4"]), ours.scores(["词3", "词4"]))


def test_top_k_is_a_sorted_brute_force(corpus):
    scores = BM25Index.build(corpus).scores(["词2", "词9"])
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
