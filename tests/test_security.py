"""Attacks and accidents (the "safe by default" issue): each test tries one as a hostile
visitor or a clumsy user would, and asserts what kb does instead of failing."""

from __future__ import annotations

import html
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from kb.embed.embedders import HashEmbedder
from kb.errors import KBError
from kb.index import update_index
from kb.index.indexer import _unchanged
from kb.present.render import highlight_html, terminal_text, text_html
from kb.rank.fusion import support
from kb.read.documents import decode_bytes, parse_document
from kb.search.searcher import MAX_QUERY_CHARS, SUPPORT_FLOOR, Searcher, bound_query, confidence
from kb.serve.access import AccessDenied, check_exposure, confine, is_local_host, library_roots, redact_paths
from kb.serve.cli import cli
from kb.serve.uploads import UPLOAD_SUFFIXES, save_upload

from .conftest import ROOT, SAMPLE_DOC, library_with, run_page

KB = str(Path(sys.executable).with_name("kb"))
MARKDOWN_TITLE = "![x](http://example.org/x.png)"
HOSTILE = (f"{MARKDOWN_TITLE}\n\n来源：[官网](http://example.org/src)\n\n"
           "正文提到陷阱<img src=http://example.org/y.png>和 :red[变色] 以及 $x^2$ 公式，"
           "还有 **加粗** 和 [链接](javascript:alert(1))。\n\n\n\n![图](http://example.org/z.png)\n")


def quiet(_message: str) -> None:
    pass


@pytest.fixture
def hostile_index(tmp_path) -> tuple[Path, Path]:
    return library_with(tmp_path, {"hostile.txt": HOSTILE})


page = run_page


def markdown_source(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
                     + [c.value for c in at.caption])


# --------------------------------------------------------------------------- 1. who may connect


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("", False), (None, False), ("192.168.1.5", False), ("::", False), ("example.org", False),
])
def test_only_loopback_counts_as_local(host, local):
    assert is_local_host(host) is local


def test_a_network_address_needs_a_long_token():
    with pytest.raises(AccessDenied, match="KB_ACCESS_TOKEN"):
        check_exposure("0.0.0.0", {})
    with pytest.raises(AccessDenied, match="too short"):
        check_exposure("0.0.0.0", {"KB_ACCESS_TOKEN": "1234"})
    assert check_exposure("0.0.0.0", {"KB_ACCESS_TOKEN": "a-long-enough-secret"}) == "a-long-enough-secret"
    assert check_exposure("127.0.0.1", {}) is None


def test_the_page_binds_loopback_by_default_everywhere():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"  # a plain `streamlit run app.py` from the checkout
    assert config["client"]["showErrorDetails"] == "none"
    dry = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True)
    line = next(x for x in dry.stdout.splitlines() if " page " in x)
    assert "--host 127.0.0.1" in line


def test_kb_page_refuses_a_network_address_without_a_token(monkeypatch):
    monkeypatch.delenv("KB_ACCESS_TOKEN", raising=False)
    r = CliRunner().invoke(cli, ["page", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "KB_ACCESS_TOKEN" in r.output and len(r.output.strip().splitlines()) == 1


def test_an_exposed_page_without_a_token_serves_nothing(hostile_index, monkeypatch, page_address):
    page_address("0.0.0.0")
    at = page(hostile_index[1], monkeypatch, q="服务")
    assert not at.exception
    assert len(at.text_input) == 0 and not [m for m in at.markdown if 'class="kb-card"' in m.value]
    assert any("KB_ACCESS_TOKEN" in e.value for e in at.error)


def test_an_exposed_page_asks_for_the_token(hostile_index, monkeypatch, page_address):
    page_address("0.0.0.0")
    monkeypatch.setenv("KB_ACCESS_TOKEN", "correct-horse-battery")
    at = page(hostile_index[1], monkeypatch, q="服务")
    assert not [m for m in at.markdown if 'class="kb-card"' in m.value]
    at.text_input[0].input("wrong-token-guess")  # typed into the form, sent by its button
    at.button[0].click().run()
    assert any("口令不对" in e.value for e in at.error) and not [m for m in at.markdown if 'class="kb-card"' in m.value]
    at.text_input[0].input("correct-horse-battery")
    at.button[0].click().run()
    assert not at.exception and [m for m in at.markdown if 'class="kb-card"' in m.value]


# --------------------------------------------------------------------------- 2. what the page may index


def test_confine_resolves_dots_and_links_before_checking(tmp_path):
    root = tmp_path / "library"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert confine(root / "sub", [root.resolve()]) == (root / "sub").resolve()
    for bad in (root / ".." / "secret", root / "link", Path("/etc"), root / "sub" / ".." / ".." / "secret"):
        with pytest.raises(AccessDenied):
            confine(bad, [root.resolve()])
    with pytest.raises(AccessDenied, match="KB_LIBRARY_ROOTS"):
        confine(root, [])


def test_library_roots_default_to_the_indexed_folder(tmp_path):
    assert library_roots(tmp_path, {}) == [tmp_path.resolve()]
    assert library_roots(None, {}) == []
    listed = {"KB_LIBRARY_ROOTS": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"}
    assert library_roots(tmp_path, listed) == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


def test_the_page_cannot_index_a_server_folder_without_roots(tmp_path, monkeypatch, page_address):
    at = page(tmp_path / "no-index", monkeypatch)
    box = at.text_input(key="folder_input")
    assert box.disabled and any("KB_LIBRARY_ROOTS" in c.value for c in at.caption)


def test_the_page_refuses_folders_outside_the_roots(tmp_path, monkeypatch, page_address):
    root = tmp_path / "library"
    root.mkdir()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.txt").write_text("服务器的机密口令在这里。" * 5, encoding="utf-8")
    (root / "escape").symlink_to(secret)
    monkeypatch.setenv("KB_LIBRARY_ROOTS", str(root))
    index = tmp_path / "index"
    for attempt in (str(secret), str(root / ".." / "secret"), str(root / "escape"), "/etc"):
        at = page(index, monkeypatch)
        at.text_input(key="folder_input").input(attempt).run()
        next(b for b in at.button if b.label == "建立索引").click().run()
        assert not at.exception and any("不能索引这个文件夹" in e.value for e in at.error)
        assert not (index / "CURRENT").exists()


# --------------------------------------------------------------------------- 3. document text is text


def test_text_html_is_inert_as_markdown_and_html():
    out = text_html(HOSTILE + "\x1b[31m")
    for token in ("](", "![", "<img", "**", ":red[", "$x", "\n", "\x1b", "javascript:"):
        assert token not in out
    assert html.unescape(out) == HOSTILE.replace("\x1b", "").replace("\x1b[31m", "[31m") + "[31m"


def test_highlighting_keeps_markup_inert():
    out = highlight_html("看![x](http://e.org/a.png)这里", ["这里"], "")
    assert "![" not in out and "](" not in out and '<mark class="kb-term">这里</mark>' in out


def test_hostile_title_and_metadata_are_text_on_every_view(hostile_index, monkeypatch, page_address):
    corpus, index = hostile_index
    s = Searcher.load(index)
    doc = next(d for d in s.docs if d["path"] == "hostile.txt")
    assert doc["title"] == MARKDOWN_TITLE
    pid = next(p["id"] for p in s.document(doc["doc_id"])["passages"] if p["kind"] != "header")
    for params in ({"q": "陷阱 公式 加粗"}, {"doc": doc["doc_id"], "p": pid}, {"p": pid}, {"doc": doc["doc_id"]}):
        at = page(index, monkeypatch, **params)
        assert not at.exception
        source = markdown_source(at)
        for token in ("](", "![", "<img", ":red[", "**加粗**"):
            assert token not in source, (params, token)
        assert not at.header  # the title is no longer given to st.header (markdown)
    assert MARKDOWN_TITLE in html.unescape(source)


def test_terminal_output_drops_escape_sequences(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "esc.txt").write_text("标题\x1b]0;pwned\x07\n\n正文\x1b[2J清屏攻击的段落，内容足够长。", encoding="utf-8")
    idx = str(tmp_path / "idx")
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(corpus), "--index", idx, "--model", "hash:64"]).exit_code == 0
    r = runner.invoke(cli, ["search", "清屏攻击", "--index", idx, "--mode", "lexical"])
    assert r.exit_code == 0 and "\x1b" not in r.output and "\x07" not in r.output
    assert terminal_text("a\x1b[2Jb\u202ec") == "a\ufffd[2Jb\ufffdc"


def test_page_errors_carry_no_server_paths(hostile_index, monkeypatch, page_address):
    _, index = hostile_index
    for params in ({"doc": "nope"}, {"p": "nope:1"}, {"doc": "nope", "p": "nope:2"}):
        at = page(index, monkeypatch, **params)
        assert not at.exception and at.error
        assert all(str(index) not in html.unescape(e.value) and str(index.parent) not in html.unescape(e.value)
                   for e in at.error)
    assert redact_paths("cannot read /home/alice/secret/plan.txt (denied)") == "cannot read …/plan.txt (denied)"


def test_an_index_that_cannot_be_opened_shows_one_sentence(tmp_path, monkeypatch, page_address):
    f = tmp_path / "a-file"
    f.write_text("x")
    at = page(f, monkeypatch)
    assert not at.exception and any("无法打开索引" in e.value for e in at.error)
    assert all(str(tmp_path) not in html.unescape(e.value) for e in at.error)


# --------------------------------------------------------------------------- 4. uploads


def test_upload_types_are_an_explicit_extension_list(tmp_path):
    assert "text" not in UPLOAD_SUFFIXES and all(s.startswith(".") for s in UPLOAD_SUFFIXES)
    assert ".text" not in UPLOAD_SUFFIXES
    with pytest.raises(KBError, match="unsupported"):
        save_upload(tmp_path, "notes.text", "正文内容".encode(), suffixes=UPLOAD_SUFFIXES)
    with pytest.raises(KBError, match="unsupported"):
        save_upload(tmp_path, "run.sh", b"rm -rf /", suffixes=UPLOAD_SUFFIXES)
    with pytest.raises(KBError, match="limit"):
        save_upload(tmp_path, "big.txt", "字".encode() * 400, max_bytes=1000, suffixes=UPLOAD_SUFFIXES)
    assert not list(tmp_path.iterdir())


def test_messages_stay_until_dismissed(hostile_index, monkeypatch, page_address):
    corpus, index = hostile_index
    s = Searcher.load(index)
    doc = next(d["doc_id"] for d in s.docs if d["path"] == "hostile.txt")
    (corpus / "hostile.txt").unlink()  # gone behind the page's back: removing it fails
    at = page(index, monkeypatch)
    at.sidebar.selectbox(key="remove_doc").set_value(doc).run()
    at.sidebar.checkbox(key="remove_confirm").check().run()
    next(b for b in at.sidebar.button if b.label == "移出知识库").click().run()
    assert any("未能移出" in e.value for e in at.sidebar.error)
    at.sidebar.slider(key="k").set_value(5).run()  # any later interaction: the message is still there
    assert any("未能移出" in e.value for e in at.sidebar.error)
    next(b for b in at.sidebar.button if b.label == "知道了").click().run()
    assert not any("未能移出" in e.value for e in at.sidebar.error)


# --------------------------------------------------------------------------- 5. errors, not tracebacks


def _corrupt(index: Path, name: str, data: bytes | None) -> None:
    """Overwrite (or, with ``data=None``, delete) a file of the live generation: its
    manifest, or a file of its first segment."""
    gen = index / (index / "CURRENT").read_text().strip()
    if name != "manifest.json":
        seg = json.loads((gen / "manifest.json").read_text())["segments"][0]["name"]
        gen = index / "segments" / seg
    if data is None:
        shutil.rmtree(gen / name) if (gen / name).is_dir() else (gen / name).unlink()
    else:
        (gen / name).write_bytes(data)


BAD = [
    # (setup, args, exit code, words in the message)
    (None, ["search", "服务", "-k", "0"], 2, "-k"),
    (None, ["search", "服务", "-k", "-1"], 2, "-k"),
    (None, ["search", "服务", "-k", "1001"], 2, "-k"),
    (None, ["search", "  "], 2, "empty query"),
    (None, ["search", "服务", "--mode", "magic"], 2, "mode"),
    (None, ["related", "x:1", "-k", "0"], 2, "-k"),
    ("file", ["search", "服务"], 1, "is a file"),
    ("file", ["index", "DOCS"], 1, "is a file"),
    ("file", ["stats"], 1, "is a file"),
    ("manifest", ["search", "服务"], 1, "damaged"),
    ("sqlite", ["search", "服务"], 1, "damaged"),
    ("sqlite", ["index", "DOCS"], 1, "damaged"),
    ("faiss", ["search", "服务"], 1, "damaged"),
    ("current", ["stats"], 0, "CURRENT is damaged"),  # the newest intact generation is read
    ("postings", ["search", "服务"], 1, "segments/seg-000001/postings/vocab.json is missing"),
    ("idhash", ["stats"], 1, "segments/seg-000001/idhash.npy is missing"),
    ("segment", ["search", "服务"], 1, "segments/seg-000001 is missing"),
    ("segment", ["index", "DOCS"], 1, "--rebuild"),
]


@pytest.mark.parametrize("setup, args, code, words", BAD)
def test_bad_invocations_give_one_line_never_a_traceback(tmp_path, setup, args, code, words):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLE_DOC, docs / "a.txt")
    index = tmp_path / "idx"
    if setup == "file":
        index.write_text("not an index")
    else:
        update_index(docs, index, model="hash:64", progress=False, warn=quiet)
    if setup == "manifest":
        _corrupt(index, "manifest.json", b"{not json")
    elif setup == "sqlite":
        _corrupt(index, "meta.sqlite", b"SQLite format 3\x00" + b"\x07" * 4000)
    elif setup == "faiss":
        _corrupt(index, "vectors.faiss", b"garbage" * 10)
    elif setup == "current":
        (index / "CURRENT").write_text("../../etc\n")
    elif setup == "postings":
        _corrupt(index, "postings/vocab.json", None)
    elif setup == "idhash":
        _corrupt(index, "idhash.npy", None)
    elif setup == "segment":
        _corrupt(index, "", None)
    argv = [KB] + [str(docs) if a == "DOCS" else a for a in args] + ["--index", str(index)]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert words in r.stderr
    if code == 1:
        assert len(r.stderr.strip().splitlines()) == 1


def test_an_unwritable_index_folder_is_one_line(tmp_path, monkeypatch, corpus):
    """As root no folder is read-only, so the kernel's refusal is simulated where kb asks."""
    import kb.store.local.layout

    real_open = os.open

    def refuse(path, *a, **kw):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(kb.store.local.layout.os, "open", refuse)
    r = CliRunner().invoke(cli, ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", "hash:64"])
    assert r.exit_code == 1 and "cannot write the index folder" in r.output and "permission denied" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_rebuild_repairs_a_damaged_index(tmp_path, corpus):
    index = tmp_path / "idx"
    update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    _corrupt(index, "meta.sqlite", b"garbage" * 100)
    _corrupt(index, "manifest.json", b"{}")
    with pytest.raises(KBError, match="damaged"):
        update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    report = update_index(corpus, index, model="hash:64", rebuild=True, progress=False, warn=quiet)
    assert report.added == 1 and Searcher.load(index).search("服务", mode="lexical")


# --------------------------------------------------------------------------- 6. bounded queries


class SpyEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.seen: list[str] = []

    def _encode(self, texts, is_query):
        self.seen.extend(texts)
        return super()._encode(texts, is_query)


def test_a_huge_query_reaches_the_encoder_and_tokenizer_cut(tmp_path, corpus, monkeypatch):
    index = tmp_path / "idx"
    update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    spy = SpyEmbedder()
    s = Searcher.load(index, embedder=spy)
    tokenized: list[int] = []
    import kb.search.searcher

    real = kb.search.searcher.tokenize
    monkeypatch.setattr(kb.search.searcher, "tokenize",
                        lambda text, **kw: tokenized.append(len(text)) or real(text, **kw))
    hits = s.search("服务理念" * 25_000, k=5)  # 100,000 characters
    assert hits and max(len(t) for t in spy.seen) <= MAX_QUERY_CHARS and max(tokenized) <= MAX_QUERY_CHARS
    assert bound_query("问" * 100_000) == ("问" * MAX_QUERY_CHARS, True)
    assert bound_query("  短问题 ") == ("短问题", False)


def test_cli_says_when_the_query_was_cut(tmp_path, corpus):
    idx = str(tmp_path / "idx")
    runner = CliRunner()
    runner.invoke(cli, ["index", str(corpus), "--index", idx, "--model", "hash:64"])
    r = runner.invoke(cli, ["search", "服务" * 1000, "--index", idx, "--json"])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["truncated"] is True and len(data["query"]) == MAX_QUERY_CHARS
    assert "cut to its first 512 characters" in r.stderr


def test_a_long_link_on_the_page_is_cut_with_a_notice(hostile_index, monkeypatch, page_address):
    at = page(hostile_index[1], monkeypatch, q="服务" * 2500)
    assert not at.exception
    assert len(at.text_input(key="q_input").value) <= MAX_QUERY_CHARS
    assert any("只用了前 512 个字" in c.value for c in at.caption)


# --------------------------------------------------------------------------- 7. nothing disappears silently


def test_an_unreadable_file_keeps_its_passages(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    shutil.copy(SAMPLE_DOC, corpus / "a.txt")
    (corpus / "b.txt").write_text("第二篇文档，讲的是乡村振兴与人居环境整治。", encoding="utf-8")
    index = tmp_path / "idx"
    update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    (corpus / "b.txt").unlink()
    (corpus / "b.txt").symlink_to(corpus / "unmounted" / "b.txt")  # the file's storage went away
    warnings: list[str] = []
    report = update_index(corpus, index, progress=False, warn=warnings.append)
    assert report.kept == 1 and report.removed == 0 and "previous version kept" in report.summary()
    assert any(w.startswith("b.txt: cannot be read") for w in warnings)
    assert any("人居环境" in h.text for h in Searcher.load(index).search("人居环境", mode="lexical"))


def test_an_unreadable_folder_keeps_its_documents(tmp_path, monkeypatch):
    corpus = tmp_path / "docs"
    (corpus / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE_DOC, corpus / "a.txt")
    (corpus / "sub" / "b.txt").write_text("子文件夹里的文档，讲的是乡村振兴。", encoding="utf-8")
    index = tmp_path / "idx"
    update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    warnings: list[str] = []
    report = update_index(corpus, index, progress=False, warn=warnings.append)
    assert report.kept == 1 and report.removed == 0
    assert any("sub/: folder cannot be read; keeping its 1 indexed document(s)" in w for w in warnings)
    monkeypatch.setattr(os, "scandir", lambda path=".": (_ for _ in ()).throw(PermissionError(13, "denied", path)))
    with pytest.raises(KBError, match="cannot read the folder"):
        update_index(corpus, index, progress=False, warn=quiet)
    monkeypatch.setattr(os, "scandir", real)
    assert len(Searcher.load(index).docs) == 2


def test_an_emptied_folder_needs_prune(tmp_path, corpus):
    index = tmp_path / "idx"
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(corpus), "--index", str(index), "--model", "hash:64"]).exit_code == 0
    moved = tmp_path / "elsewhere"
    shutil.move(str(corpus), moved)
    corpus.mkdir()  # an unmounted drive leaves an empty mount point
    r = runner.invoke(cli, ["index", str(corpus), "--index", str(index)])
    assert r.exit_code == 1 and "--prune" in r.output and "nothing was removed" in r.output
    assert len(Searcher.load(index).docs) == 1
    shutil.rmtree(corpus)
    r = runner.invoke(cli, ["index", "--index", str(index)])  # re-sync: the folder itself is gone
    assert r.exit_code == 1 and "is not a folder" in r.output and len(Searcher.load(index).docs) == 1
    corpus.mkdir()
    r = runner.invoke(cli, ["index", str(corpus), "--index", str(index), "--prune"])
    assert r.exit_code == 0 and "1 removed" in r.output and not Searcher.load(index).docs


# --------------------------------------------------------------------------- 8. reading and change detection


@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_utf16_without_bom_is_read(encoding):
    text = "一、总体要求\n组工干部要树立全新的服务理念。\n二、具体措施\n由被动式服务向主动服务转变。\n"
    raw = text.encode(encoding)
    assert not raw.startswith((b"\xfe\xff", b"\xff\xfe"))
    decoded, enc, _ = decode_bytes(raw)
    assert decoded == text and enc == encoding
    assert parse_document(raw, "a.txt").title == "一、总体要求"


def test_an_edit_keeping_size_and_mtime_is_seen(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    f = corpus / "a.txt"
    f.write_text("第一版：服务理念的内容写在这里。", encoding="utf-8")
    old = time.time() - 3600
    os.utime(f, (old, old))  # an old file: not "racy"
    index = tmp_path / "idx"
    update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    st = f.stat()
    f.write_text("第二版：创新方法的内容写在这里。", encoding="utf-8")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    report = update_index(corpus, index, progress=False, warn=quiet)
    assert report.changed == 1
    assert Searcher.load(index).search("创新方法", mode="lexical")[0].text.startswith("第二版")
    assert update_index(corpus, index, progress=False, warn=quiet).updated is False


def test_racy_clean_rule():
    class St:
        st_size, st_mtime_ns, st_ctime_ns = 10, 5_000, 5_000

    prev = {"size": 10, "mtime_ns": 5_000, "ctime_ns": 5_000}
    assert _unchanged(prev, St, racy_before=6_000)
    assert not _unchanged(prev, St, racy_before=5_000)  # modified as the previous scan began: re-hash
    assert not _unchanged({**prev, "ctime_ns": 4_000}, St, racy_before=6_000)
    assert _unchanged({**prev, "ctime_ns": None}, St, racy_before=6_000)  # an index from before ctime


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in kb catches it."""


class DyingEmbedder(HashEmbedder):
    """Killed during its third batch."""

    batch_size = 16

    def __init__(self) -> None:
        super().__init__(64)
        self.batches = 0

    def embed_passages(self, texts, progress=False, desc="embedding"):
        self.batches += 1
        if self.batches == 3:
            raise Killed
        return super().embed_passages(texts)


def test_embeddings_are_saved_every_small_batch(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    paragraphs = [f"第{i}段讲的是第{i}件事情。" + "内容各不相同，" * 10 + "到此为止。" for i in range(80)]
    (corpus / "long.txt").write_text("长文档\n\n" + "\n\n".join(paragraphs), encoding="utf-8")
    index = tmp_path / "idx"
    with pytest.raises(Killed):
        update_index(corpus, index, embedder=DyingEmbedder(), progress=False, warn=quiet)
    con = sqlite3.connect(index / "pending.sqlite")
    saved = con.execute("SELECT count(*) FROM vec").fetchone()[0]
    con.close()
    assert saved == 2 * DyingEmbedder.batch_size  # two batches done, at most one lost


# --------------------------------------------------------------------------- 9. the relevance floor


def test_unseen_query_words_count_against_support(tmp_path, corpus):
    index = tmp_path / "idx"
    update_index(corpus, index, model="hash:64", progress=False, warn=quiet)
    s = Searcher.load(index)
    hits = s.search("量子计算机的工作原理", mode="lexical")
    assert hits and hits[0].scores["lexical"] > 0.5  # the trap: 工作 is the only indexed word
    assert hits[0].support < SUPPORT_FLOOR and confidence(hits) == "low"
    weights = s.query_weights(["量子", "工作"])
    assert weights["量子"] > weights["工作"]  # a word the index has never seen weighs the most
    assert support(weights, "工作") < 0.5 and support(weights, "量子工作") == 1.0
    assert support({"忧党": 1.0}, "常怀忧党之心") == 1.0 and support({"之心": 1.0, "恪尽": 1.0}, "之心") == 0.5


def test_confidence_and_min_score(tmp_path, corpus):
    idx = str(tmp_path / "idx")
    runner = CliRunner()
    runner.invoke(cli, ["index", str(corpus), "--index", idx, "--model", "hash:64"])
    assert confidence([]) == "low"
    r = json.loads(runner.invoke(cli, ["search", "服务", "--index", idx, "--json", "--min-score", "0.99"]).stdout)
    assert r["hits"] == []
    r = json.loads(runner.invoke(cli, ["search", "服务", "--index", idx, "--json"]).stdout)
    assert r["hits"] and all(np.isfinite(h["support"]) for h in r["hits"])
    r = runner.invoke(cli, ["search", "服务", "--index", idx, "--min-score", "2"])
    assert r.exit_code == 2


@pytest.mark.slow
def test_an_unanswerable_question_is_flagged_on_the_page(sample_index, monkeypatch, page_address):
    s = Searcher.load(sample_index)
    assert confidence(s.search("量子计算机的工作原理")) == "low"
    assert confidence(s.search("由被动式服务向主动服务转变")) == "ok"
    at = page(sample_index, monkeypatch, q="量子计算机的工作原理")
    assert any("没有足够相关的段落" in w.value for w in at.warning)
    cards = [m.value for m in at.markdown if 'class="kb-card"' in m.value]
    assert 0 < len(cards) <= 3 and all("相关度低" in c for c in cards)
