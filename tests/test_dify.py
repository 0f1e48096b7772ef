"""Dify's external knowledge API (``POST /retrieval`` on ``kb serve``): request and answer shapes as
Dify's documentation gives them, its error codes, the score threshold on kb's calibrated score, and
metadata conditions as kb's filters."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kb.serve.api import create_app

from .conftest import library_with

TOKEN = "a-long-enough-dify-token"


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    return library_with(tmp_path_factory.mktemp("dify"), {
        "notice.txt": "关于加强基层工作的通知\n\n来源：县委办公室 时间：2025-03-02\n\n一、总体要求\n"
                      "总的要求是：一是加强学习，提高素质；二是改进作风；三是严守纪律。\n",
        "plan.txt": "年度学习计划\n\n来源：组织部 时间：2023-05-10\n\n全年组织集中学习十二次，加强学习，提高素质。\n"})


@pytest.fixture(scope="module")
def client(library) -> TestClient:
    return TestClient(create_app(library[1], token=TOKEN, name="policy"))


def ask(client, body: dict, token: str | None = TOKEN, header: str | None = None):
    headers = {"Authorization": header if header is not None else f"Bearer {token}"} if (token or header) else {}
    return client.post("/retrieval", json=body, headers=headers)


def body(query: str = "加强学习 提高素质", top_k: int = 3, threshold: float = 0.0, **extra) -> dict:
    return {"knowledge_id": "policy", "query": query,
            "retrieval_setting": {"top_k": top_k, "score_threshold": threshold}, **extra}


def test_a_dify_request_gets_records_with_content_score_title_and_metadata(client):
    r = ask(client, body())
    assert r.status_code == 200
    records = r.json()["records"]
    assert 1 <= len(records) <= 3
    for rec in records:
        assert set(rec) == {"content", "score", "title", "metadata"}
        assert isinstance(rec["metadata"], dict) and 0.0 <= rec["score"] <= 1.0
        assert {"passage_id", "path", "heading_path", "page", "source", "date", "citation"} <= set(rec["metadata"])
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    assert any("加强学习" in rec["content"] for rec in records)
    top = next(rec for rec in records if rec["metadata"]["path"] == "notice.txt")
    assert top["title"] == "关于加强基层工作的通知" and top["metadata"]["source"] == "县委办公室"
    assert top["metadata"]["heading_path"][0] == "关于加强基层工作的通知" and top["metadata"]["citation"]


def test_the_score_threshold_is_on_kbs_calibrated_score(client):
    every = ask(client, body(top_k=10)).json()["records"]
    cut = sorted({r["score"] for r in every})[len({r["score"] for r in every}) // 2]
    kept = ask(client, body(top_k=10, threshold=cut)).json()["records"]
    assert kept and all(r["score"] >= cut for r in kept) and len(kept) < len(every)
    assert ask(client, body(top_k=10, threshold=1.0)).json() == {"records": []}


def test_dify_error_codes(client):
    assert ask(client, body(), token=None).json()["error_code"] == 1001
    r = ask(client, body(), header="Basic abc")
    assert (r.status_code, r.json()["error_code"]) == (403, 1001)
    r = ask(client, body(), token="not-the-key-at-all")
    assert (r.status_code, r.json()) == (403, {"error_code": 1002, "error_msg": "Authorization failed"})
    r = ask(client, {**body(), "knowledge_id": "hr"})
    assert (r.status_code, r.json()["error_code"]) == (404, 2001)


def test_metadata_conditions_become_kb_filters(client):
    def paths(condition: dict) -> set[str]:
        r = ask(client, body(top_k=10, metadata_condition=condition))
        assert r.status_code == 200, r.text
        return {rec["metadata"]["path"] for rec in r.json()["records"]}

    assert paths({"conditions": [{"name": ["source"], "comparison_operator": "is", "value": "组织部"}]}) == {"plan.txt"}
    assert paths({"logical_operator": "or", "conditions": [
        {"name": "source", "comparison_operator": "is", "value": "组织部"},
        {"name": "source", "comparison_operator": "is", "value": "县委办公室"}]}) == {"plan.txt", "notice.txt"}
    assert paths({"conditions": [{"name": "date", "comparison_operator": "after", "value": "2025-01-01"}]}) \
        == {"notice.txt"}
    assert paths({"conditions": [{"name": "source", "comparison_operator": "in", "value": ["无此来源"]}]}) == set()


def test_a_metadata_condition_kb_cannot_apply_is_refused_not_dropped(client):
    for condition in ({"conditions": [{"name": "category", "comparison_operator": "is", "value": "x"}]},
                      {"conditions": [{"name": "source", "comparison_operator": "not contains", "value": "x"}]},
                      {"logical_operator": "or", "conditions": [
                          {"name": "source", "comparison_operator": "is", "value": "组织部"},
                          {"name": "date", "comparison_operator": "after", "value": "2024-01-01"}]}):
        r = ask(client, body(metadata_condition=condition))
        assert (r.status_code, r.json()["error_code"]) == (400, 4001)


def test_without_a_key_configured_retrieval_is_open_on_loopback(library):
    c = TestClient(create_app(library[1]))
    r = c.post("/retrieval", json={**body(), "knowledge_id": "default"})
    assert r.status_code == 200 and r.json()["records"]
