"""The library folder is a boundary (issue 24): nothing outside it is read through a link,
nothing in it can make `kb index` wait (FIFOs, devices), every read is bounded while it
reads, and a file name is data (bytes that are not UTF-8, control characters)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from kb.errors import DocumentError
from kb.index import update_index
from kb.read.documents import printable_name, read_regular
from kb.search.searcher import Searcher
from kb.serve.cli import cli
from kb.serve.uploads import save_upload


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: what these tests guard against is a blocked open()."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def index(folder, where, warnings=None):
    return update_index(folder, where, model="hash:64", progress=False,
                        warn=(warnings.append if warnings is not None else lambda m: None))


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("通知\n\n各单位要严格执行差旅费报销制度。", encoding="utf-8")
    (folder / "sub" / "real.txt").write_text("水稻\n\n杂交水稻的育种方法包括三系法。", encoding="utf-8")
    return folder


def test_links_to_files_outside_the_library_are_never_read(tmp_path, docs):
    secret = tmp_path / "secret.txt"
    secret.write_text("机密\n\n口令是天王盖地虎宝塔镇河妖。", encoding="utf-8")
    (docs / "secret.txt").symlink_to(secret)
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "inner.txt").symlink_to(docs / "sub" / "real.txt")  # inside: followed (same content: one copy)
    (docs / "elsewhere").symlink_to(tmp_path)  # a folder: never followed, and said
    warnings: list[str] = []
    report = index(docs, tmp_path / "index", warnings)
    assert any(w.startswith("elsewhere: a link to a folder, not followed") for w in warnings)
    assert "secret.txt: a link to a file outside the library folder, skipped" in warnings
    assert "passwd.txt: a link to a file outside the library folder, skipped" in warnings
    s = Searcher.load(tmp_path / "index")
    assert sorted(d["path"] for d in s.docs) == ["a.txt", "inner.txt"]  # sub/real.txt: the same content
    assert report.documents == 2
    assert not s.search("天王盖地虎", mode="lexical") and not s.search("root", mode="lexical")


def test_a_link_retargeted_outside_the_library_drops_its_document(tmp_path, docs):
    (docs / ".store").mkdir()  # hidden: not indexed itself, but inside the library
    (docs / ".store" / "c.txt").write_text("内部\n\n链接指向的内部文件。", encoding="utf-8")
    (docs / "b.txt").symlink_to(docs / ".store" / "c.txt")
    index(docs, tmp_path / "index")
    assert "b.txt" in {d["path"] for d in Searcher.load(tmp_path / "index").docs}
    outside = tmp_path / "outside.txt"
    outside.write_text("外面\n\n不属于知识库的文件内容。", encoding="utf-8")
    (docs / "b.txt").unlink()
    (docs / "b.txt").symlink_to(outside)
    report = index(docs, tmp_path / "index")
    assert report.removed == 1 and "b.txt" not in {d["path"] for d in Searcher.load(tmp_path / "index").docs}


def test_fifos_and_devices_are_skipped_without_waiting(tmp_path, docs):
    os.mkfifo(docs / "pipe.txt")
    (docs / "zero.txt").symlink_to("/dev/zero")
    (docs / "to-pipe.md").symlink_to(docs / "pipe.txt")  # a link inside the library to a FIFO
    warnings: list[str] = []
    with deadline(60):
        report = index(docs, tmp_path / "index", warnings)
    assert "pipe.txt: a FIFO, skipped" in warnings and "to-pipe.md: a FIFO, skipped" in warnings
    assert "zero.txt: a link to a file outside the library folder, skipped" in warnings
    assert report.documents == 2 and report.skipped == 3


def test_reading_refuses_a_fifo_and_stops_at_the_limit(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with deadline(10), pytest.raises(DocumentError, match="a FIFO, not read"):
        read_regular(str(tmp_path / "pipe"), "pipe", 1000, 1000)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 5000)
    assert read_regular(str(big), "big.txt", 5000, 5000) == b"x" * 5000
    with pytest.raises(DocumentError, match="over the"):
        read_regular(str(big), "big.txt", 4096, 4096)


def test_names_that_are_not_utf8_or_hold_control_characters_are_data(tmp_path, docs):
    raw = os.fsencode(docs)
    with open(os.path.join(raw, b"bad\xff.txt"), "wb") as f:
        f.write("坏名\n\n文件名不是合法的 UTF-8 编码。".encode())
    (docs / "new\nline.txt").write_text("换行\n\n文件名里有一个换行符。", encoding="utf-8")
    warnings: list[str] = []
    first = index(docs, tmp_path / "index", warnings)
    assert first.failed == 0 and first.documents == 4
    paths = {d["path"] for d in Searcher.load(tmp_path / "index").docs}
    assert {"bad\\xff.txt", "new\\x0aline.txt"} <= paths
    again = index(docs, tmp_path / "index")
    assert not again.updated and again.unchanged == 4  # the same ids from the same bytes
    r = CliRunner().invoke(cli, ["search", "文件名", "--index", str(tmp_path / "index"), "--mode", "lexical"])
    assert r.exit_code == 0 and "new\nline" not in r.output and "new\\x0aline.txt" in r.output
    assert printable_name("普通文件.txt") == "普通文件.txt" and printable_name("a\tb") == "a\\x09b"


def test_a_query_of_stray_bytes_is_answered_not_a_crash(tmp_path, docs):
    index(docs, tmp_path / "index")
    r = CliRunner().invoke(cli, ["search", "\udcff\udcfe", "--index", str(tmp_path / "index")])
    assert "unexpected" not in r.output and "Traceback" not in r.output
    assert r.exit_code in (0, 2), r.output


def test_an_upload_never_writes_through_a_planted_link(tmp_path):
    library, outside = tmp_path / "library", tmp_path / "outside.md"
    library.mkdir()
    outside.write_text("原样", encoding="utf-8")
    (library / ".x.md.uploading").symlink_to(outside)
    target = save_upload(library, "x.md", "# 上传\n\n新的内容。".encode())
    assert target == library / "x.md" and target.read_text(encoding="utf-8").startswith("# 上传")
    assert outside.read_text(encoding="utf-8") == "原样" and not target.is_symlink()


def test_rebuild_keeps_the_librarys_embedder_unless_told_another(tmp_path, docs):
    """Was: `kb index --rebuild` without --model silently switched a library to the default model."""
    index(docs, tmp_path / "index")  # hash:64
    r = update_index(docs, tmp_path / "index", rebuild=True, progress=False, warn=lambda m: None)
    assert r.updated
    assert Searcher.load(tmp_path / "index").spec == {"backend": "hash", "model": "char-ngram-hash-64", "dim": 64}
    update_index(docs, tmp_path / "index", model="hash:32", rebuild=True, progress=False, warn=lambda m: None)
    assert Searcher.load(tmp_path / "index").spec["dim"] == 32


@pytest.mark.parametrize("current", [b"", b"garbage\n", b"../../../etc\n", b"gen-999999\n", b"\xff\xfe"])
def test_a_damaged_current_falls_back_to_the_newest_intact_generation(tmp_path, docs, current, capsys):
    index(docs, tmp_path / "index")
    (docs / "b.txt").write_text("第二篇\n\n乡村振兴与人居环境整治。", encoding="utf-8")
    index(docs, tmp_path / "index")
    live = (tmp_path / "index" / "CURRENT").read_text().strip()
    (tmp_path / "index" / "CURRENT").write_bytes(current)
    s = Searcher.load(tmp_path / "index")
    assert s.version == live and s.search("人居环境", mode="lexical")
    assert "CURRENT is damaged" in capsys.readouterr().err
    (docs / "c.txt").write_text("第三篇\n\n修复之后的新文档。", encoding="utf-8")
    report = index(docs, tmp_path / "index")  # the next run publishes, and CURRENT is whole again
    assert report.updated and (tmp_path / "index" / "CURRENT").read_text().strip() == report.generation


def test_a_damaged_meta_sqlite_is_damage_in_one_line(tmp_path, docs):
    index(docs, tmp_path / "index")
    meta = next((tmp_path / "index" / "segments").glob("*/meta.sqlite"))
    data = bytearray(meta.read_bytes())
    for i in range(len(data) // 3, len(data), 7):
        data[i] = (data[i] + 77) % 256
    meta.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["search", "差旅费", "--mode", "lexical", "--index", str(tmp_path / "index")])
    assert r.exit_code == 1 and "is damaged" in r.output and "meta.sqlite" in r.output
    assert "unexpected" not in r.output


class _BadPages:
    """A connection whose pages turn out not to read when a query reaches them."""

    def __init__(self, con):
        self.con = con

    def execute(self, *a, **kw):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def cursor(self):
        return self


def test_damage_found_by_a_query_is_damage_and_503_not_a_crash(tmp_path, docs, monkeypatch):
    """Was: "unexpected DatabaseError … please report it" from the CLI and 500 from the API
    when a query first reached a page of meta.sqlite that does not read."""
    from fastapi.testclient import TestClient

    from kb.embed.embedders import HashEmbedder
    from kb.errors import IndexDamaged
    from kb.serve.api import create_app

    index(docs, tmp_path / "index")
    s = Searcher.load(tmp_path / "index", embedder=HashEmbedder(64))
    hit = s.search("差旅费", mode="lexical")[0]
    api = TestClient(create_app(tmp_path / "index", embedder=HashEmbedder(64)))
    assert api.get("/search", params={"q": "差旅费"}).status_code == 200
    for seg in s.snapshot.segments:  # shared with the API's searcher: one reader per segment
        monkeypatch.setattr(seg.store, "con", _BadPages(seg.store.con))
    with pytest.raises(IndexDamaged, match="meta.sqlite is missing or unreadable"):
        s.show(hit.id)
    got = api.get(f"/passages/{hit.id}")
    assert got.status_code == 503 and "damaged" in got.json()["detail"]
    health = api.get("/healthz")  # the damage a query met is what health says from then on
    assert health.status_code == 503 and "meta.sqlite" in health.json()["detail"]


def test_healthz_finds_files_changed_on_disk_after_the_index_was_opened(tmp_path, docs):
    """Damage no query has met yet: /healthz checks again every file changed since it was verified."""
    from fastapi.testclient import TestClient

    from kb.embed.embedders import HashEmbedder
    from kb.serve.api import create_app

    index(docs, tmp_path / "index")
    api = TestClient(create_app(tmp_path / "index", embedder=HashEmbedder(64)))
    assert api.get("/healthz").status_code == 200
    target = next((tmp_path / "index" / "segments").glob("seg-*/idhash.npy"))
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    os.utime(target, ns=(1, 1))  # another mtime, whatever the clock's resolution
    target.write_bytes(bytes(data))
    health = api.get("/healthz")
    assert health.status_code == 503 and "idhash.npy" in health.json()["detail"], health.json()


def test_streamlit_never_phones_out_for_its_address(monkeypatch):
    """Was: a websocket handshake with a foreign Origin made the page's server ask
    checkip.amazonaws.com for its public address (and its start-up banner did too)."""
    from streamlit import net_util
    from streamlit.web.server import server_util

    from kb.serve.streamlit_server import harden

    asked: list = []
    monkeypatch.setattr(net_util, "_make_blocking_http_get", lambda *a, **k: asked.append(a))
    monkeypatch.setattr(net_util, "_external_ip", None)
    harden()
    assert net_util.get_external_ip() == "" and not asked
    assert not server_util.is_url_from_allowed_origins("http://evil.example:8501") and not asked


def test_uploads_need_the_token_where_the_page_does(monkeypatch):
    """Was: `PUT /_stcore/upload_file/…` took files from visitors who never gave the token."""
    from starlette.exceptions import HTTPException
    from streamlit import config
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFileRec

    from kb.serve.access import authorize_session
    from kb.serve.streamlit_server import harden

    harden()
    files = MemoryUploadedFileManager("/_stcore/upload_file")
    rec = UploadedFileRec(file_id="f1", name="a.txt", type="text/plain", data=b"x" * 100)
    old = config.get_option("server.address")
    try:
        config.set_option("server.address", "0.0.0.0")
        monkeypatch.setenv("KB_ACCESS_TOKEN", "a-long-secret-token-for-tests")
        with pytest.raises(HTTPException) as refused:
            files.add_file("visitor", rec)
        assert refused.value.status_code == 403 and not files.get_files("visitor", ["f1"])
        authorize_session("member")
        files.add_file("member", rec)
        assert files.get_files("member", ["f1"])
        monkeypatch.delenv("KB_ACCESS_TOKEN")  # exposed without a token: the page serves nothing, takes nothing
        with pytest.raises(HTTPException):
            files.add_file("member", rec)
        config.set_option("server.address", "127.0.0.1")  # loopback, no token: open, as the page is
        files.add_file("anyone", rec)
    finally:
        config.set_option("server.address", old)


def test_kb_page_starts_the_hardened_server(monkeypatch, tmp_path):
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda exe, args: started.append(args))
    r = CliRunner().invoke(cli, ["page", "--index", str(tmp_path / "index")])
    assert r.exit_code == 0, r.output
    assert started[0][1:4] == ["-m", "kb.serve.streamlit_server", "run"]


def test_a_full_disk_while_writing_vectors_is_one_line_and_nothing_is_published(tmp_path, docs, monkeypatch):
    """Was: "unexpected RuntimeError … please report it" (faiss reports a failed write so)."""
    import faiss

    index(docs, tmp_path / "index")
    live = (tmp_path / "index" / "CURRENT").read_text()
    (docs / "b.txt").write_text("第二篇\n\n乡村振兴与人居环境整治。", encoding="utf-8")

    def full(*a, **k):
        raise RuntimeError("Error in void faiss::FileIOWriter: Error: 'ret == (n)' failed: write error in "
                           f"{tmp_path}/index/segments/seg-000002.tmp/vectors.faiss: 28 (No space left on device)")

    monkeypatch.setattr(faiss, "write_index", full)
    r = CliRunner().invoke(cli, ["index", str(docs), "--index", str(tmp_path / "index")])
    assert r.exit_code == 1 and "no space left on device" in r.output and "unexpected" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert (tmp_path / "index" / "CURRENT").read_text() == live


def test_a_failure_after_publishing_is_a_warning_and_the_update_stays_live(tmp_path, docs, monkeypatch):
    import errno

    import kb.index.local as local

    index(docs, tmp_path / "index")
    (docs / "b.txt").write_text("第二篇\n\n乡村振兴与人居环境整治。", encoding="utf-8")

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "plan_merge", lambda entries, **k: [[e["name"] for e in entries]])
    monkeypatch.setattr(local, "merge_segments", disk_full)
    r = CliRunner().invoke(cli, ["index", str(docs), "--index", str(tmp_path / "index")])
    assert r.exit_code == 0, r.output
    assert "the update is live" in r.output and "merging segments failed (no space left on device)" in r.output
    assert Searcher.load(tmp_path / "index").search("人居环境", mode="lexical")


def _library(folder):
    folder.mkdir()
    for i in range(1, 9):
        (folder / f"d{i}.txt").write_text(f"通知{i}\n\n第{i}项：各单位要严格执行差旅费报销制度，水稻育种{i}。",
                                          encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def damage_template(tmp_path_factory):
    """Two runs: a generation with two segments and a deletion list, and a fresh build of the
    same folder to compare answers with."""
    root = tmp_path_factory.mktemp("damage")
    docs = _library(root / "docs")
    index(docs, root / "index")
    (docs / "d1.txt").write_text("通知\n\n改过的差旅费报销通知。", encoding="utf-8")
    index(docs, root / "index")
    index(docs, root / "fresh")
    return root


QUERIES = ("差旅费报销", "水稻育种3", "改过的通知")


def answers(where):
    s = Searcher.load(where)
    return [[(h.id, round(h.score, 6)) for h in s.search(q, k=5)] for q in QUERIES]


def _index_files(where):
    gen = (where / "CURRENT").read_text().strip()
    files = ["CURRENT", f"{gen}/manifest.json", *[p.relative_to(where).as_posix()
                                                  for p in sorted((where / gen / "deleted").glob("*.npy"))]]
    seg = sorted((where / "segments").glob("seg-*"))[0]
    return files + [p.relative_to(where).as_posix() for p in sorted(seg.rglob("*")) if p.is_file()]


def _damage(path, how):
    if how == "deleted":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # 64 bytes flipped in the middle (all of a short file)
        at = max(0, len(data) // 2 - 32)
        data[at: at + 64] = bytes(b ^ 0x5A for b in data[at: at + 64])
        path.write_bytes(bytes(data))


# every file of a live generation (a deletion list, the first segment's every file) x three kinds of damage
MATRIX_FILES = ["CURRENT", "manifest.json", "deleted", "segment.json", "meta.sqlite", "vectors.faiss",
                "passage_doc.npy", "idhash.npy", "postings/vocab.json", "postings/params.json",
                "postings/indptr.npy", "postings/rows.npy", "postings/tf.npy", "postings/lengths.npy"]


def test_the_matrix_names_every_file_of_an_index(damage_template):
    names = {f.split("/", 1)[1] if f.startswith(("gen-", "segments/")) else f
             for f in _index_files(damage_template / "index")}
    names = {n.split("/", 1)[1] if n.startswith("seg-") else n for n in names}
    assert {("deleted" if n.startswith("deleted/") else n) for n in names} == set(MATRIX_FILES)


@pytest.mark.parametrize("how", ["truncated", "flipped", "deleted"])
@pytest.mark.parametrize("part", MATRIX_FILES)
def test_every_damaged_index_file_is_one_line_and_rebuild_repairs_it(tmp_path, damage_template, part, how):
    """The corruption matrix: each file of an index truncated, with bytes flipped, or deleted is
    found and named in one line (a damaged CURRENT: the newest intact generation, said once),
    `kb check` says so, and `kb index --rebuild` (keeping the recorded embedder) gives the answers
    of a fresh build. Was: flipped vector bytes answered with wrong scores and --rebuild reused them."""
    import shutil

    where = tmp_path / "index"
    shutil.copytree(damage_template / "index", where)
    target = next(f for f in _index_files(where) if f == part or f.endswith("/" + part)
                  or (part == "deleted" and "/deleted/" in f))
    _damage(where / target, how)
    fresh = answers(damage_template / "fresh")
    r = CliRunner().invoke(cli, ["search", "差旅费报销", "--index", str(where)])
    if part == "CURRENT":
        assert r.exit_code == 0 and "CURRENT is damaged" in r.output
        assert answers(where) == fresh  # read from the newest intact generation: the live one
    else:
        name = target.rsplit("/", 1)[-1]
        assert r.exit_code == 1 and "is damaged" in r.output and name in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    checked = CliRunner().invoke(cli, ["check", "--index", str(where)])
    assert checked.exit_code == 1, checked.output
    repaired = update_index(damage_template / "docs", where, rebuild=True, progress=False, warn=lambda m: None)
    assert repaired.updated
    assert answers(where) == fresh
    assert CliRunner().invoke(cli, ["check", "--index", str(where)]).exit_code == 0


def test_kb_check_finds_every_damaged_file_and_says_what_rebuild_does(tmp_path, docs):
    index(docs, tmp_path / "index")
    (docs / "b.txt").write_text("第二篇\n\n乡村振兴与人居环境整治。", encoding="utf-8")
    index(docs, tmp_path / "index")  # two segments
    ok = CliRunner().invoke(cli, ["check", "--index", str(tmp_path / "index")])
    assert ok.exit_code == 0 and ok.output.startswith("ok:")
    first = sorted((tmp_path / "index" / "segments").glob("seg-*"))[0]
    data = bytearray((first / "vectors.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (first / "vectors.faiss").write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["check", "--index", str(tmp_path / "index"), "--json"])
    assert r.exit_code == 1
    import json

    report = json.loads(r.output)
    assert [s["ok"] for s in report["segments"]] == [False, True]
    assert "vectors.faiss" in report["segments"][0]["problem"] and report["passages_to_embed"] > 0
    text = CliRunner().invoke(cli, ["check", "--index", str(tmp_path / "index")])
    assert text.exit_code == 1 and "--rebuild` embeds again the" in text.output


def test_a_damaged_cache_beside_the_index_is_started_afresh(tmp_path, docs):
    """Was: garbage in pending.sqlite stopped every `kb index` ("file is not a database")."""
    from kb.read.ocr import Line, OcrCache

    index(docs, tmp_path / "index")
    (tmp_path / "index" / "pending.sqlite").write_bytes(os.urandom(4096))
    (docs / "b.txt").write_text("第二篇\n\n乡村振兴与人居环境整治。", encoding="utf-8")
    said = []
    report = index(docs, tmp_path / "index", said)
    assert report.updated and any("pending.sqlite was damaged" in m for m in said)
    (tmp_path / "ocr.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    told = []
    cache = OcrCache(tmp_path / "ocr.sqlite", told.append)
    assert cache.get("page") is None and told
    cache.put("page", [Line(0, 0, 1, 1, "扫描页", 0.9)])
    assert [ln.text for ln in OcrCache(tmp_path / "ocr.sqlite").get("page")] == ["扫描页"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to act as another user")
def test_files_another_user_may_not_read_or_write_are_said_so_not_called_damage(tmp_path):
    """EACCES is a permission to fix, never "damaged — rebuild it"; and a home this user may
    not read (jieba's dictionary cache) is no crash."""
    import stat
    import subprocess
    import sys
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="kb-perm-"))
    try:
        docs = _library(root / "docs")
        index(docs, root / "index")
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
        meta = next((root / "index" / "segments").glob("seg-*/meta.sqlite"))
        meta.chmod(0o600)

        def as_nobody(*args):
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   sys.executable, "-m", "kb", *args], capture_output=True, text=True,
                                  env={**os.environ, "HOME": "/root", "KB_CACHE_DIR": ""}, timeout=120)

        r = as_nobody("search", "差旅费", "--index", str(root / "index"))
        assert r.returncode == 1 and "meta.sqlite (permission denied)" in r.stderr, r.stderr
        assert "damaged" not in r.stderr and "unexpected" not in r.stderr
        w = as_nobody("index", str(docs), "--index", str(root / "index"))
        assert w.returncode == 1 and "cannot write the index folder" in w.stderr and "permission denied" in w.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_read_only_file_system_is_one_line(tmp_path, docs, monkeypatch):
    import errno

    import kb.store.local.layout as layout

    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(layout.os, "open", read_only)
    r = CliRunner().invoke(cli, ["index", str(docs), "--index", str(tmp_path / "index"), "--model", "hash:64"])
    assert r.exit_code == 1 and "(read-only file system)" in r.output and "unexpected" not in r.output


def test_a_connection_that_asks_nothing_is_closed(tmp_path):
    """Was: a connection that never sent a request, or sent its headers a byte at a time, stayed
    open for good (uvicorn only times out kept-alive connections after a response)."""
    import socket
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI

    from kb.serve.http_server import BoundedH11

    class Quick(BoundedH11):
        head_seconds = 0.5

    app = FastAPI()

    @app.get("/")
    def root():
        return {"ok": True}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=Quick, log_level="warning", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)

        def closed_within(seconds, send=b"", drip=b""):
            c = socket.create_connection(sock.getsockname())
            c.sendall(send)
            end = time.monotonic() + seconds
            try:
                while time.monotonic() < end:
                    c.settimeout(0.2)
                    try:
                        data = c.recv(1 << 16)
                    except TimeoutError:
                        if drip:
                            c.sendall(drip)
                        continue
                    if not data:
                        return True
                return False
            finally:
                c.close()

        assert closed_within(5)  # asks nothing
        assert closed_within(5, b"GET / HTTP/1.1\r\n", drip=b"X-A: b\r\n")  # a head that never ends
        # a request answered in time keeps its connection for the next one (keep-alive 30 s here)
        def answer(c) -> bytes:  # one whole response (its head and body may come in separate reads)
            data = b""
            while not data.endswith(b'{"ok":true}'):
                chunk = c.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            return data

        c = socket.create_connection(sock.getsockname())
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        c.settimeout(5)
        assert answer(c).startswith(b"HTTP/1.1 200")
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer(c).startswith(b"HTTP/1.1 200")
        c.close()
    finally:
        server.should_exit = True
        thread.join(10)
