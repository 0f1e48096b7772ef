"""Several libraries on one ``kb serve``, each with its own keys: the scope matrix (every role on
every endpoint of its own and of another library), one answer for "no such library" and "not
yours", a revoked key refused at once, merged search across libraries, secrets never written
anywhere but the one line that shows them, and ``kb libraries`` / ``kb tokens``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from kb.serve.api import create_app
from kb.serve.cli import cli
from kb.serve.keys import AuditLog, KeyStore, load_libraries

from .conftest import library_with

ACCESS_TOKEN = "an-all-libraries-admin-token"


@pytest.fixture(scope="module")
def libraries(tmp_path_factory) -> dict[str, Path]:
    hr = library_with(tmp_path_factory.mktemp("hr"), {
        "leave.txt": "年休假管理办法\n\n来源：人事处 时间：2025-01-05\n\n职工连续工作满一年的，享受带薪年休假。\n"})
    finance = library_with(tmp_path_factory.mktemp("finance"), {
        "travel.txt": "差旅费报销规定\n\n来源：财务处 时间：2025-02-10\n\n出差人员应在返回后十日内报销差旅费。\n"})
    return {"hr": hr[1], "finance": finance[1]}


@pytest.fixture()
def home(tmp_path) -> Path:
    return tmp_path / "kbhome"


@pytest.fixture()
def keyed(libraries, home):
    store = KeyStore(home)
    secrets = {(lib, role): store.add(f"{lib.strip('*') or 'all'}-{role}", lib, role)
               for lib in ("hr", "finance") for role in ("read", "write", "admin")}
    secrets[("*", "admin")] = store.add("everything", "*", "admin")
    app = create_app(libraries=libraries, keys=store, require_key=True, token=ACCESS_TOKEN)
    return TestClient(app), secrets, store


def endpoints(library: str, client: TestClient) -> list[str]:
    """One URL of every read endpoint of ``library``, with real ids from it."""
    docs = client.get(f"/libraries/{library}/documents", headers=_admin()).json()["documents"]
    doc = next(d for d in docs if not d["path"].startswith("000_"))
    passage = client.get(f"/libraries/{library}/documents/{doc['doc_id']}", headers=_admin()).json()["passages"][0]
    pid = passage["id"]
    base = f"/libraries/{library}"
    return [f"{base}/search?q=规定", f"{base}/passages/{pid}", f"{base}/passages/{pid}/related",
            f"{base}/documents", f"{base}/documents/{doc['doc_id']}", f"{base}/stats"]


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ACCESS_TOKEN}"}


def _key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_the_scope_matrix_every_role_on_every_endpoint_of_its_own_and_another_library(keyed):
    client, secrets, _ = keyed
    urls = {lib: endpoints(lib, client) for lib in ("hr", "finance")}
    for (lib, role), secret in secrets.items():
        for target, target_urls in urls.items():
            for url in target_urls:
                r = client.get(url, headers=_key(secret))
                if lib in ("*", target):
                    assert r.status_code == 200, (lib, role, url, r.text)
                else:
                    assert r.status_code == 403, (lib, role, url)
                    assert r.json() == {"error": "forbidden",
                                        "detail": f"this key does not open a library named {target!r}"}
    for url in urls["hr"]:
        assert client.get(url).status_code == 401  # no key
        assert client.get(url, headers=_key("kb_not-a-real-key-at-all")).status_code == 401


def test_a_library_that_does_not_exist_gets_the_same_answer_as_one_that_is_not_yours(keyed):
    client, secrets, _ = keyed
    hr_key = _key(secrets[("hr", "read")])
    other = client.get("/libraries/finance/stats", headers=hr_key)
    missing = client.get("/libraries/payroll/stats", headers=hr_key)
    assert other.status_code == missing.status_code == 403
    assert other.json()["detail"].replace("finance", "X") == missing.json()["detail"].replace("payroll", "X")
    assert client.get("/libraries/payroll/stats", headers=_admin()).status_code == 404  # an admin may know


def test_a_key_lists_and_searches_only_its_libraries(keyed):
    client, secrets, _ = keyed
    hr_key = _key(secrets[("hr", "read")])
    assert client.get("/libraries", headers=hr_key).json() == [{"name": "hr", "role": "read"}]
    assert {x["name"] for x in client.get("/libraries", headers=_admin()).json()} == {"hr", "finance"}
    hits = client.get("/search", params={"q": "报销 年休假"}, headers=hr_key).json()["hits"]
    assert hits and all(not h["path"].startswith("travel") for h in hits)  # the single-library path: its one
    assert client.get("/search", params={"q": "报销", "library": "finance"}, headers=hr_key).status_code == 403


def test_search_over_several_libraries_merges_by_calibrated_score_and_names_each_hits_library(keyed):
    client, _, _ = keyed
    merged = client.get("/search", params={"q": "报销差旅费 年休假", "k": 6, "library": ["hr", "finance"]},
                        headers=_admin()).json()
    hits = merged["hits"]
    assert {h["library"] for h in hits} == {"hr", "finance"} and merged["libraries"] == ["hr", "finance"]
    each = [dict(h, library=lib) for lib in ("hr", "finance")
            for h in client.get(f"/libraries/{lib}/search", params={"q": "报销差旅费 年休假", "k": 6},
                                headers=_admin()).json()["hits"]]
    expect = sorted(each, key=lambda h: (-h["score"], h["library"], h["id"]))[:6]
    assert [(h["library"], h["id"], h["score"]) for h in hits] == [(h["library"], h["id"], h["score"]) for h in expect]
    travel = next(h for h in hits if h["path"] == "travel.txt")
    assert travel["library"] == "finance"


def test_a_revoked_key_is_refused_at_once(keyed, home):
    client, secrets, _ = keyed
    key = _key(secrets[("hr", "read")])
    assert client.get("/libraries/hr/stats", headers=key).status_code == 200
    KeyStore(home).revoke("hr-read")  # another process (kb tokens revoke) rewrites the file
    assert client.get("/libraries/hr/stats", headers=key).status_code == 401


def test_dify_retrieval_follows_the_keys_scope(keyed):
    client, secrets, _ = keyed
    body = {"query": "年休假", "retrieval_setting": {"top_k": 3, "score_threshold": 0}}
    hr_key = _key(secrets[("hr", "read")])
    assert client.post("/retrieval", json={**body, "knowledge_id": "hr"}, headers=hr_key).json()["records"]
    for other in ("finance", "payroll"):  # not yours, and not there: one answer
        r = client.post("/retrieval", json={**body, "knowledge_id": other}, headers=hr_key)
        assert (r.status_code, r.json()["error_code"]) == (403, 1002)
    r = client.post("/retrieval", json={**body, "knowledge_id": "payroll"}, headers=_admin())
    assert (r.status_code, r.json()["error_code"]) == (404, 2001)


def test_kb_libraries_and_kb_tokens_never_write_a_secret_but_the_line_that_shows_it(tmp_path, libraries, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KB_HOME", str(home))
    runner = CliRunner()
    out = runner.invoke(cli, ["libraries", "add", "hr", "--index", str(libraries["hr"])])
    assert out.exit_code == 0, out.output
    assert load_libraries(home)["hr"].index == str(libraries["hr"].resolve())
    made = runner.invoke(cli, ["tokens", "add", "alice", "--library", "hr", "--role", "read"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("kb_") and len(secret) > 30
    listed = runner.invoke(cli, ["tokens", "list", "--json"])
    assert json.loads(listed.stdout)[0] | {"created": None} == {"name": "alice", "library": "hr", "role": "read",
                                                                "created": None, "last_used": None}
    client = TestClient(create_app(libraries={"hr": libraries["hr"]}, keys=KeyStore(home), require_key=True))
    answer = client.get("/search", params={"q": "年休假"}, headers=_key(secret))
    assert answer.status_code == 200
    assert runner.invoke(cli, ["tokens", "revoke", "alice"]).exit_code == 0
    assert client.get("/search", params={"q": "年休假"}, headers=_key(secret)).status_code == 401
    audit = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit] == ["library.add", "key.add", "key.revoke"]
    for place in [listed.stdout, answer.text, *(p.read_text() for p in home.iterdir() if p.is_file())]:
        assert secret not in place
    AuditLog(home).record("x", "hr", "test")  # appended, never rewritten
    assert len((home / "audit.jsonl").read_text().splitlines()) == 4


def test_mcp_tools_name_their_library(libraries):
    import asyncio

    from kb.serve.mcp import build_server

    server = build_server(libraries=libraries)

    def call(name: str, args: dict) -> dict:
        return json.loads(asyncio.run(server.call_tool(name, args)).content[0].text)

    assert [x["name"] for x in call("list_libraries", {})["libraries"]] == ["hr", "finance"]
    travel = call("search", {"question": "报销差旅费", "library": "finance", "k": 3})["passages"]
    assert travel and any("差旅费" in p["text"] for p in travel)
    leave = call("search", {"question": "报销差旅费", "library": "hr", "k": 3})["passages"]
    assert not any("差旅费" in p["text"] for p in leave)
    pid = next(p["id"] for p in travel if "差旅费" in p["text"])
    assert "差旅费" in call("fetch", {"id": pid, "library": "finance"})["text"]


def test_the_page_asks_for_a_key_once_and_shows_only_the_libraries_it_opens(libraries, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from kb.serve.keys import Library, save_libraries

    from .conftest import ROOT

    home = tmp_path / "home"
    save_libraries(home, {n: Library(n, str(ix)) for n, ix in libraries.items()})
    store = KeyStore(home)
    reader = store.add("alice", "hr", "read")
    admin = store.add("root", "*", "admin")
    monkeypatch.setenv("KB_HOME", str(home))
    monkeypatch.delenv("KB_INDEX", raising=False)
    monkeypatch.delenv("KB_ACCESS_TOKEN", raising=False)

    def enter(secret: str):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
        assert at.text_input[0].label == "访问口令" and not at.sidebar.selectbox  # nothing shown before the key
        at.text_input[0].input(secret)
        return at.button[0].click().run()

    wrong = enter("kb_wrong-secret-entirely")
    assert any("口令不对" in e.value for e in wrong.error)
    at = enter(reader)
    assert not at.exception and not at.error
    assert "知识库" not in [s.label for s in at.sidebar.selectbox]  # one library opens: no choice to make
    assert not [f for f in at.sidebar.markdown if "管理文档" in f.value]  # a read key uploads nothing
    at.query_params["q"] = "年休假"
    at.run()
    assert not at.text_input or at.text_input[0].label != "访问口令"  # the key is asked once per session
    shown = " ".join(m.value for m in at.markdown)
    assert "年休假" in shown and "差旅费" not in shown
    root = enter(admin)
    choice = next(s for s in root.sidebar.selectbox if s.label == "知识库")
    assert sorted(choice.options) == ["finance", "hr"]
    assert [f for f in root.sidebar.markdown if "管理文档" in f.value]


@pytest.fixture()
def writable(tmp_path):
    """Two fresh libraries (a test here changes them), keys of every role for each, and the app."""
    (tmp_path / "hr").mkdir()
    (tmp_path / "finance").mkdir()
    made = {"hr": library_with(tmp_path / "hr", {"leave.txt": "年休假管理办法\n\n职工满一年的，享受带薪年休假。\n"}),
            "finance": library_with(tmp_path / "finance", {"travel.txt": "差旅费报销规定\n\n十日内报销差旅费。\n"})}
    home = tmp_path / "kbhome"
    store = KeyStore(home)
    secrets = {(lib, role): store.add(f"{lib}-{role}", lib, role)
               for lib in made for role in ("read", "write", "admin")}
    app = create_app(libraries={n: ix for n, (_, ix) in made.items()}, keys=store, require_key=True)
    return TestClient(app), app, secrets, {n: docs for n, (docs, _) in made.items()}, home


def test_writes_need_a_write_key_of_that_library(writable):
    client, app, secrets, docs, home = writable
    for (lib, role), secret in secrets.items():
        for target in ("hr", "finance"):
            r = client.post(f"/libraries/{target}/reindex", headers=_key(secret))
            if lib != target:
                assert (r.status_code, r.json()["detail"]) == (403,
                                                               f"this key does not open a library named {target!r}")
            elif role == "read":
                assert (r.status_code, r.json()["detail"]) == (403, f"this key may only read library {target!r}")
                assert client.get(f"/libraries/{target}/indexing", headers=_key(secret)).status_code == 200
            else:
                assert r.status_code == 202, (lib, role, r.text)
    reader = _key(secrets[("hr", "read")])
    hr_docs = client.get("/libraries/hr/documents", headers=reader).json()["documents"]
    leave = next(d for d in hr_docs if d["path"] == "leave.txt")
    assert client.post("/libraries/hr/documents", params={"filename": "x.txt"}, content="新规定".encode(),
                       headers=reader).status_code == 403
    assert client.delete(f"/libraries/hr/documents/{leave['doc_id']}", headers=reader).status_code == 403
    assert client.post("/libraries/hr/reindex").status_code == 401  # no key
    assert sorted(p.name for p in docs["hr"].iterdir()) == sorted([*(d["path"] for d in hr_docs)])  # nothing changed
    assert not (home / "audit.jsonl").read_text().count("document.")


def test_a_write_key_uploads_and_removes_and_the_next_search_sees_it(writable):
    client, app, secrets, docs, home = writable
    writer = _key(secrets[("hr", "write")])
    body = "加班补贴发放办法\n\n职工在法定节假日加班的，按日工资的三倍发放加班补贴。\n".encode()
    r = client.post("/libraries/hr/documents", params={"filename": "../../加班.txt"}, content=body, headers=writer)
    assert r.status_code == 202 and r.json()["saved"] == "加班.txt" and (docs["hr"] / "加班.txt").read_bytes() == body
    assert app.state.reindexers["hr"].wait(60)["state"] == "done"
    hits = client.get("/libraries/hr/search", params={"q": "节假日加班补贴"}, headers=writer).json()["hits"]
    assert hits[0]["path"] == "加班.txt"
    assert client.get("/libraries/hr/indexing", headers=writer).json()["state"] == "done"
    leave = next(d for d in client.get("/libraries/hr/documents", headers=writer).json()["documents"]
                 if d["path"] == "leave.txt")
    r = client.delete(f"/libraries/hr/documents/{leave['doc_id']}", headers=writer)
    assert r.status_code == 202 and r.json()["removed"] == "leave.txt"
    assert not (docs["hr"] / "leave.txt").exists() and list((docs["hr"] / ".kb-trash").rglob("leave.txt"))
    assert app.state.reindexers["hr"].wait(60)["state"] == "done"
    paths = [d["path"] for d in client.get("/libraries/hr/documents", headers=writer).json()["documents"]]
    assert "leave.txt" not in paths and "加班.txt" in paths
    assert client.delete(f"/libraries/hr/documents/{leave['doc_id']}", headers=writer).status_code == 404
    assert client.post("/libraries/hr/documents", params={"filename": "x.exe"}, content=b"MZ",
                       headers=writer).status_code == 400
    big = client.post("/libraries/hr/documents", params={"filename": "big.txt"},
                      content=b"a" * (20 * 1024 * 1024 + 1), headers=writer)
    assert big.status_code == 413 and not (docs["hr"] / "big.txt").exists()
    assert client.post("/libraries/finance/documents", params={"filename": "y.txt"}, content=body,
                       headers=writer).status_code == 403
    audit = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert [(a["key"], a["library"], a["action"], a["object"]) for a in audit if a["action"].startswith("document")] \
        == [("hr-write", "hr", "document.upload", "加班.txt"), ("hr-write", "hr", "document.remove", "leave.txt")]
    assert not any(secret in (home / "audit.jsonl").read_text() for secret in secrets.values())


def test_an_admin_key_lists_the_keys_of_its_library_and_never_a_secret(writable):
    client, _, secrets, _, _ = writable
    listed = client.get("/keys", headers=_key(secrets[("hr", "admin")]))
    assert {k["name"] for k in listed.json()} == {"hr-read", "hr-write", "hr-admin"}
    assert not any(s in listed.text for s in secrets.values()) and "sha256" not in listed.text
    assert client.get("/keys", headers=_key(secrets[("hr", "write")])).status_code == 403


def test_libraries_with_one_model_share_one_loaded_embedder(libraries):
    from kb.search.live import LiveSearcher

    hr, finance = (LiveSearcher(ix).current() for ix in libraries.values())
    assert hr.embedder is finance.embedder


def test_kb_page_library_options_offer_those_libraries(libraries, monkeypatch, page_address):
    from streamlit.testing.v1 import AppTest

    from .conftest import ROOT

    monkeypatch.setattr("sys.argv", ["app.py", *(x for n, ix in libraries.items() for x in ("--library", f"{n}={ix}"))])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    choice = next(s for s in at.sidebar.selectbox if s.label == "知识库")
    assert sorted(choice.options) == ["finance", "hr"]
