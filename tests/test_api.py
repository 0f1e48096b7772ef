"""`kb serve` (HTTP API) and `kb mcp` (Model Context Protocol): every endpoint and error
through FastAPI's TestClient, the server's own OpenAPI schema fuzzed by schemathesis, a
real uvicorn process, a generation swap under load, and the MCP tools over stdio."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import schemathesis
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from kb.index import update_index
from kb.search.searcher import MAX_QUERY_CHARS
from kb.serve.api import create_app
from kb.serve.cli import cli

from .conftest import library_with

TOKEN = "a-long-enough-test-token"


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    return library_with(tmp_path_factory.mktemp("api"), {
        "notice.txt": "关于加强基层工作的通知\n\n来源：县委办公室 时间：2025-03-02\n\n一、总体要求\n"
                      "总的要求是：一是加强学习，提高素质；二是改进作风；三是严守纪律。\n\n"
                      "原文链接：https://www.example.gov.cn/notice.html\n"})


@pytest.fixture(scope="module")
def client(library) -> TestClient:
    return TestClient(create_app(library[1]))


def test_search_is_the_json_of_kb_search(client, library):
    api = client.get("/search", params={"q": "加强学习 提高素质", "k": 3, "mode": "hybrid"}).json()
    cli_json = json.loads(CliRunner().invoke(cli, ["search", "加强学习 提高素质", "-k", "3", "--json",
                                                   "--index", str(library[1])]).stdout)
    assert api == cli_json and api["hits"] and api["hits"][0]["citation"]
    gbt = client.get("/search", params={"q": "加强学习", "cite": "gbt7714", "k": 1}).json()["hits"][0]["citation"]
    assert "[EB/OL]" in gbt and "https://www.example.gov.cn/notice.html" in gbt


def test_search_filters_and_bounds(client):
    docs = client.get("/documents").json()["documents"]
    notice = next(d["doc_id"] for d in docs if d["path"] == "notice.txt")
    hits = client.get("/search", params={"q": "服务", "doc": notice}).json()["hits"]
    assert hits and {h["doc_id"] for h in hits} == {notice}
    hits = client.get("/search", params={"q": "服务", "source": "百度文库"}).json()["hits"]
    assert hits and all(h["meta"]["source"] == "百度文库" for h in hits)
    long = client.get("/search", params={"q": "服务" * 600}).json()
    assert long["truncated"] is True and len(long["query"]) == MAX_QUERY_CHARS
    weak = client.get("/search", params={"q": "量子计算机的工作原理", "mode": "lexical"}).json()
    assert weak["low_confidence"] is True


@pytest.mark.parametrize("params, field", [
    ({"q": "服务", "k": 0}, "k"), ({"q": "服务", "k": 101}, "k"), ({"q": "服务", "k": "many"}, "k"),
    ({"q": "服务", "mode": "magic"}, "mode"), ({}, "q"), ({"q": "   "}, "q"), ({"q": "服务", "cite": "mla"}, "cite"),
    ({"q": "服务", "min_score": 2}, "min_score"),
])
def test_malformed_parameters_are_422_naming_the_field(client, params, field):
    r = client.get("/search", params=params)
    assert r.status_code == 422 and r.json()["error"] == "invalid parameter"
    assert r.json()["detail"].startswith(field + ":")


def test_passages_related_documents_stats_health(client):
    hit = client.get("/search", params={"q": "二要改进作风", "k": 1}).json()["hits"][0]
    shown = client.get(f"/passages/{hit['id']}", params={"context": 1}).json()
    assert shown["passage"]["id"] == hit["id"] and shown["document"]["doc_id"] == hit["doc_id"] and shown["citation"]
    related = client.get(f"/passages/{hit['id']}/related", params={"k": 3}).json()
    assert related["passage"] == hit["id"] and hit["id"] not in [h["id"] for h in related["hits"]]
    page = client.get("/documents", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 2 and len(page["documents"]) == 1 and page["offset"] == 1
    full = client.get(f"/documents/{hit['doc_id']}").json()
    assert full["document"]["doc_id"] == hit["doc_id"] and "严守纪律" in full["text"] and full["passages"]
    stats = client.get("/stats").json()
    assert stats["documents"] == 2 and "index" not in stats and "corpus" not in stats
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/search" in client.get("/openapi.json").json()["paths"] and client.get("/docs").status_code == 200


def test_unknown_ids_are_404_without_paths(client, library):
    for url in ("/passages/nope:1", "/passages/nope:1/related", "/documents/nope"):
        r = client.get(url)
        assert r.status_code == 404 and r.json()["error"] == "not found"
        assert str(library[1]) not in r.text and str(library[1].parent) not in r.text


def test_key_required_when_configured(library):
    c = TestClient(create_app(library[1], token=TOKEN))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        r = c.get("/search", params={"q": "服务"}, headers=headers)
        assert r.status_code == 401 and r.json() == {"error": "unauthorized",
                                                     "detail": "missing or wrong API key (Authorization: Bearer …)"}
    ok = c.get("/search", params={"q": "服务"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["hits"]
    assert c.get("/healthz").status_code == 200  # health checks need no key


def test_rate_limit_and_body_size(library):
    c = TestClient(create_app(library[1], rate_limit=3))
    codes = [c.get("/healthz").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    c = TestClient(create_app(library[1]))
    r = c.request("GET", "/healthz", content=b"x" * 70_000)
    assert r.status_code == 413 and r.json()["error"] == "request too large"


def test_cors_is_off_unless_configured(library):
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    assert "access-control-allow-origin" not in TestClient(create_app(library[1])).options(
        "/search", headers=headers).headers
    c = TestClient(create_app(library[1], cors_origins=["https://portal.example"]))
    r = c.get("/healthz", headers={"Origin": "https://portal.example"})
    assert r.headers["access-control-allow-origin"] == "https://portal.example"


def test_missing_or_damaged_index_is_503(tmp_path, library):
    c = TestClient(create_app(tmp_path / "nothing"))
    r = c.get("/search", params={"q": "服务"})
    assert r.status_code == 503 and r.json()["error"] == "index unavailable" and str(tmp_path) not in r.text
    assert c.get("/healthz").status_code == 503
    f = tmp_path / "a-file"
    f.write_text("x")
    assert TestClient(create_app(f)).get("/stats").status_code == 503


def test_kb_serve_refuses_a_network_address_without_a_key(monkeypatch):
    monkeypatch.delenv("KB_ACCESS_TOKEN", raising=False)
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "KB_ACCESS_TOKEN" in r.output


def test_x_forwarded_for_is_trusted_only_from_a_named_proxy(library, monkeypatch):
    """Was: uvicorn's default trusts X-Forwarded-For from 127.0.0.1, so a local client
    could pick a new "address" per request and never meet --rate-limit."""
    import uvicorn

    runs: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    for extra in ([], ["--trusted-proxy", "10.0.0.5"]):
        r = CliRunner().invoke(cli, ["serve", "--index", str(library[1]), "--rate-limit", "5", *extra])
        assert r.exit_code == 0, r.output
    assert runs[0]["proxy_headers"] is False
    assert runs[1]["proxy_headers"] is True and runs[1]["forwarded_allow_ips"] == "10.0.0.5"


# --------------------------------------------------------------------------- schemathesis

def test_openapi_schema_holds_under_generated_requests(tmp_path):
    """schemathesis over the server's own OpenAPI schema, every operation (uploads, removals and
    re-indexing too, on a library of its own): no 5xx, and every response matches the schema the
    server publishes (a bounded run; for a longer one, raise max_examples or point `schemathesis
    run` at a live `kb serve`)."""
    from hypothesis import given
    from schemathesis.checks import positive_data_acceptance

    app = create_app(library_with(tmp_path, {"notice.txt": "关于加强基层工作的通知\n\n一是加强学习。\n"})[1])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 25
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            # a date of the documented shape that does not exist (2024-02-31) is a 422 by design
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
    app.state.reindexers["default"].wait(120)  # the uploads' re-indexing ends before the folder goes


# --------------------------------------------------------------------------- real processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.processes
def test_a_real_server_answers_over_http_and_swaps_generations_under_load(tmp_path):
    corpus, index = library_with(tmp_path, {})
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kb", "serve", "--port", str(port), "--index", str(index)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if _get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("kb serve did not start: " + proc.stdout.read1().decode(errors="replace"))
        status, body = _get(base + "/search?q=" + urllib.parse.quote("学习型政党"))
        assert status == 200 and body["hits"]
        first_gen = _get(base + "/healthz")[1]["generation"]

        errors, answered, stop = [], [0], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    code, data = _get(base + "/search?q=" + urllib.parse.quote("乡村振兴 人居环境") + "&mode=lexical")
                    if code != 200:
                        errors.append((code, data))
                    answered[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(repr(e))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for n in range(3):  # three generations published while the server is answering
            (corpus / f"new{n}.txt").write_text(f"乡村振兴第{n}号报告\n\n二是改善人居环境，第{n}次。", encoding="utf-8")
            update_index(corpus, index, progress=False, warn=lambda m: None)
            time.sleep(0.3)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert errors == [] and answered[0] > 10
        health = _get(base + "/healthz")[1]
        assert health["generation"] != first_gen
        hits = _get(base + "/search?q=" + urllib.parse.quote("第2号报告") + "&mode=lexical")[1]["hits"]
        assert any("第2号报告" in " ".join(h["heading_path"]) + h["text"] for h in hits)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.processes
def test_mcp_tools_over_stdio(library):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    async def session():
        params = StdioServerParameters(command=sys.executable, args=["-m", "kb", "mcp", "--index", str(library[1])],
                                       env={**os.environ})
        async with Client(params, read_timeout_seconds=60) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            found = await c.call_tool("search", {"question": "严守纪律", "k": 3, "cite": "gbt7714"})
            data = json.loads(found.content[0].text)
            pid = data["passages"][0]["id"]
            shown = json.loads((await c.call_tool("get_passage", {"passage_id": pid})).content[0].text)
            near = json.loads((await c.call_tool("related", {"passage_id": pid, "k": 2})).content[0].text)
            missing = await c.call_tool("get_passage", {"passage_id": "nope:1"})
            # ChatGPT's connector pair: search(query) -> results [{id, title, url}], fetch(id)
            listed = json.loads((await c.call_tool("search", {"query": "严守纪律"})).content[0].text)["results"]
            fetched = json.loads((await c.call_tool("fetch", {"id": listed[0]["id"]})).content[0].text)
            tools = (await c.list_tools()).tools
            return names, data, shown, near, missing, listed, fetched, tools

    names, data, shown, near, missing, listed, fetched, tools = asyncio.run(session())
    assert names == {"search", "fetch", "get_passage", "related", "list_libraries"}
    assert all(t.annotations is not None and t.annotations.read_only_hint for t in tools)  # readOnlyHint
    assert listed and set(listed[0]) == {"id", "title", "url"} and listed[0]["id"] == data["passages"][0]["id"]
    assert set(fetched) == {"id", "title", "text", "url", "metadata"} and "严守纪律" in fetched["text"]
    assert fetched["url"] == "https://www.example.gov.cn/notice.html" and fetched["metadata"]["citation"]
    assert data["passages"] and all(p["citation"] for p in data["passages"])
    assert "严守纪律" in data["passages"][0]["text"] and "[EB/OL]" in data["passages"][0]["citation"]
    assert shown["passage"]["id"] == data["passages"][0]["id"] and shown["passage"]["citation"]
    assert near["passages"] and all(p["citation"] for p in near["passages"])
    assert missing.is_error


def test_mcp_tool_errors_give_the_assistant_kbs_reason_without_a_traceback(library, caplog):
    pytest.importorskip("mcp")
    from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError

    from kb.embed.embedders import HashEmbedder
    from kb.search.live import LiveSearcher
    from kb.serve.mcp import build_server

    server = build_server(library[1], LiveSearcher(library[1], embedder=HashEmbedder(64)))

    def reason(name: str, args: dict) -> str:
        with pytest.raises(ToolError) as e:
            asyncio.run(server.call_tool(name, args))
        assert not isinstance(e.value, UnexpectedToolError)  # anticipated: no traceback is logged
        return str(e.value)

    with caplog.at_level("INFO"):
        assert "no passage with id 'nope:1'" in reason("get_passage", {"passage_id": "nope:1"})
        assert "empty query" in reason("search", {"question": "   "})
        assert "unknown mode" in reason("search", {"question": "纪律", "mode": "fuzzy"})
    assert str(library[1]) not in " ".join(r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
