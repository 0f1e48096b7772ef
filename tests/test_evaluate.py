from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from kb.errors import KBError
from kb.eval.evaluate import evaluate, first_occurrences, hit_at, load_dataset, mrr_at, ndcg_at, percentile
from kb.serve.cli import cli

from .conftest import FIXTURES

MINI = FIXTURES / "mini_eval"


def test_metrics_against_hand_computed_values():
    ranked = ["d3", "d1", "d7", "d2"]
    pos = {"d1", "d2"}
    assert hit_at(ranked, pos, 1) == 0.0 and hit_at(ranked, pos, 2) == 1.0
    assert mrr_at(ranked, pos, 10) == 0.5
    assert mrr_at(ranked, pos, 1) == 0.0
    # DCG = 1/log2(3) + 1/log2(5); IDCG = 1/log2(2) + 1/log2(3)
    assert ndcg_at(ranked, pos, 10) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert ndcg_at(["d1"], {"d1"}, 10) == 1.0
    assert ndcg_at(["x", "y"], {"d1"}, 10) == 0.0
    assert ndcg_at(ranked, pos, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert first_occurrences(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert percentile([1, 2, 3, 4], 50) == 2.5


def test_eval_passage_set_all_modes(tmp_path):
    result = evaluate(MINI, k=10, index=tmp_path / "cache", model="hash:64")
    assert result["dataset"] == "mini_eval" and result["passages"] == 6 and result["queries"] == 4
    assert set(result["modes"]) == {"hybrid", "dense", "lexical"}
    for stats in result["modes"].values():
        assert set(stats) == {"hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10", "p50_ms", "p95_ms", "by_type"}
        by_type = stats["by_type"]
        assert by_type["short"]["queries"] + by_type.get("long", {"queries": 0})["queries"] == 4
        assert sum(g["queries"] for name, g in by_type.items() if "indexed_terms" in name) == 4
        assert 0 <= stats["hit@1"] <= stats["hit@5"] <= stats["hit@10"] <= 1
        assert stats["p50_ms"] <= stats["p95_ms"]
    # with 2 relevant documents among 6, every question finds its passage in the top 5 by keywords
    assert result["modes"]["lexical"]["hit@5"] == 1.0
    # the cache is reused: nothing embedded the second time
    again = evaluate(MINI, modes=("lexical",), index=tmp_path / "cache", model="hash:64")
    assert result["indexing"]["embedded"] > 0 and again["indexing"]["embedded"] == 0

    def quality(r):
        return {k: v for k, v in r["modes"]["lexical"].items() if not k.endswith("_ms")}

    assert result["related"]["queries"] == 3  # the three passages of the DRCD article 梵文
    assert quality(again) == quality(result)


def test_hits_count_for_the_dataset_passage_their_document_came_from(tmp_path, monkeypatch):
    """Several hits from one dataset passage (chunks) count once, at the first rank."""
    import kb.eval.evaluate as ev

    calls = {}
    real = ev._passage_metrics

    def spy(ds, results, path_to_id):
        calls["ranked"] = [first_occurrences([path_to_id[h.path] for h in hits]) for hits in results]
        return real(ds, results, path_to_id)

    monkeypatch.setattr(ev, "_passage_metrics", spy)
    evaluate(MINI, modes=("lexical",), index=tmp_path / "cache", model="hash:64")
    for ranked in calls["ranked"]:
        assert len(ranked) == len(set(ranked))
        assert set(ranked) <= {"TRIAL_800", "TRIAL_154", "drcd_test:1147-2", "drcd_test:1147-3", "drcd_test:1147-8",
                               "drcd_test:1149-13"}


def test_expect_set_against_an_index(tmp_path, seed_questions, sample_index):
    d = tmp_path / "seed"
    d.mkdir()
    (d / "queries.jsonl").write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in seed_questions),
                                     encoding="utf-8")
    result = evaluate(d, modes=("hybrid", "lexical"), index=sample_index)
    assert result["modes"]["hybrid"]["top1"] == 1.0 and result["modes"]["hybrid"]["failures"] == []
    assert result["modes"]["lexical"]["top1_passed"] == 6


def test_eval_cli_json_and_table(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["eval", str(MINI), "--json", "--model", "hash:64", "--index", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert {"dataset", "passages", "queries", "embedder", "modes"} <= set(data)
    r = runner.invoke(cli, ["eval", str(MINI), "--mode", "lexical", "--model", "hash:64",
                            "--index", str(tmp_path / "c")])
    assert r.exit_code == 0 and "mrr@10" in r.output and "lexical" in r.output and "hybrid" not in r.output


def test_bad_dataset_folders(tmp_path):
    with pytest.raises(KBError, match="no queries.jsonl"):
        load_dataset(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"id": "q1", "question": "问题"}\n', encoding="utf-8")
    with pytest.raises(KBError, match="no passages.jsonl"):
        load_dataset(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"id": "q1", "question": "问题"\n', encoding="utf-8")
    with pytest.raises(KBError, match="not valid JSON"):
        load_dataset(tmp_path)


def test_an_empty_question_is_a_miss_not_a_crash(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    (d / "passages.jsonl").write_text((MINI / "passages.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    (d / "queries.jsonl").write_text(
        '{"id": "q1", "question": "", "positives": ["TRIAL_800"]}\n'
        '{"id": "q2", "question": "生命数耗完即算为什么？", "positives": ["TRIAL_800"]}\n', encoding="utf-8")
    result = evaluate(d, modes=("lexical",), index=tmp_path / "cache", model="hash:64")
    assert result["modes"]["lexical"]["hit@10"] == 0.5


def test_related_finds_the_other_passages_of_an_article(tmp_path):
    """DRCD-style: one article cut into passages that share its title."""
    d = tmp_path / "articles"
    d.mkdir()
    articles = {"长江": ["长江是中国第一长河，发源于青藏高原，流经十一个省区。",
                       "长江流域的水电资源丰富，三峡工程位于长江上游。",
                       "长江航运发达，被称为黄金水道，沿岸港口众多。"],
                "熊猫": ["大熊猫是中国特有的动物，主要栖息在四川的竹林中。", "大熊猫以竹子为主食，每天要吃很多竹子。"]}
    passages, n = [], 0
    for title, texts in articles.items():
        for text in texts:
            passages.append({"id": f"P{n}", "title": title, "text": text})
            n += 1
    (d / "passages.jsonl").write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in passages), encoding="utf-8")
    (d / "queries.jsonl").write_text(json.dumps({"id": "q", "question": "长江的水电", "positives": ["P1"]},
                                                ensure_ascii=False), encoding="utf-8")
    result = evaluate(d, modes=("lexical",), index=tmp_path / "cache", model="hash:64")
    related = result["related"]
    assert related["queries"] == 5
    assert 0 <= related["precision@5"] <= 1 and 0 < related["recall@5"] <= 1
    # 4 other passages exist for each query, at most 2 of them from its own article
    assert related["precision@5"] <= 0.5 + 1e-9
