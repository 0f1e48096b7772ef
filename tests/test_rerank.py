from __future__ import annotations

import numpy as np
import pytest

from kb.embed.rerank import Reranker
from kb.errors import KBError
from kb.index import update_index
from kb.search.searcher import Searcher


def test_cross_encoder_scores_are_0_to_1_and_deterministic(tiny_cross_encoder):
    r = Reranker(str(tiny_cross_encoder), device="cpu")
    texts = ["一二三", "丁七万", "三上下不"]
    a, b = r.scores("一二", texts), r.scores("一二", texts)
    assert a.shape == (3,) and np.all((a > 0) & (a < 1)) and np.allclose(a, b)
    assert len(set(np.round(a, 6))) > 1  # it tells the texts apart


def test_search_with_rerank_orders_by_the_cross_encoder(tmp_path, tiny_cross_encoder):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(8):
        body = "".join(chr(0x4E00 + (i * 37 + j) % 900) for j in range(80))
        (folder / f"d{i}.txt").write_text(f"文档{i}\n\n一二三{body}。", encoding="utf-8")
    update_index(folder, tmp_path / "index", model="hash:64", progress=False, warn=lambda m: None)
    s = Searcher.load(tmp_path / "index")
    plain = s.search("一二三", k=8, mode="lexical")
    reranker = Reranker(str(tiny_cross_encoder))
    hits = s.search("一二三", k=8, mode="lexical", rerank=reranker)
    assert {h.id for h in hits} == {h.id for h in plain}
    scores = [h.scores["rerank"] for h in hits]
    assert scores == sorted(scores, reverse=True) and [h.score for h in hits] == scores
    expected = reranker.scores("一二三", [h.text for h in plain])
    assert [h.id for h in hits] == [plain[i].id for i in np.argsort(-expected, kind="stable")]


@pytest.mark.slow  # imports sentence-transformers and torch
def test_unloadable_cross_encoder_is_one_clear_error(tmp_path):
    with pytest.raises(KBError, match="cannot load cross-encoder"):
        Reranker(str(tmp_path / "missing"))
