from __future__ import annotations

import pytest

from kb.errors import DocumentError, KBError, UnsupportedFormat
from kb.serve.uploads import TRASH, remove_document, sanitize_filename, save_upload


@pytest.mark.parametrize("name, safe", [
    ("报告.txt", "报告.txt"),
    ("../../etc/passwd.txt", "passwd.txt"),
    ("..\\..\\win.ini.md", "win.ini.md"),
    (".hidden.txt", "hidden.txt"),
    ("a<script>b.HTML", "a_script_b.html"),
    ("名字 (1).docx", "名字 (1).docx"),
    ("x\x00y.txt", "xy.txt"),
    ("", "document"),
])
def test_sanitize_filename(name, safe):
    assert sanitize_filename(name) == safe


def test_save_upload_checks_type_size_and_never_overwrites(tmp_path):
    a = save_upload(tmp_path, "../a.txt", "第一份".encode())
    assert a == tmp_path / "a.txt" and a.read_text(encoding="utf-8") == "第一份"
    assert save_upload(tmp_path, "a.txt", "第一份".encode()) == a  # identical: not duplicated
    b = save_upload(tmp_path, "a.txt", "第二份".encode())
    assert b.name == "a (2).txt" and a.read_text(encoding="utf-8") == "第一份"
    with pytest.raises(UnsupportedFormat):
        save_upload(tmp_path, "evil.exe", b"MZ")
    with pytest.raises(DocumentError, match="limit"):
        save_upload(tmp_path, "big.txt", b"x" * 2000, max_bytes=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a (2).txt", "a.txt"]


def test_remove_document_moves_to_trash_and_stays_inside(tmp_path):
    (tmp_path / "sub").mkdir()
    doc = tmp_path / "sub" / "d.txt"
    doc.write_text("内容", encoding="utf-8")
    dest = remove_document(tmp_path, "sub/d.txt")
    assert not doc.exists() and dest.read_text(encoding="utf-8") == "内容" and TRASH in dest.parts
    outside = tmp_path.parent / "outside.txt"
    outside.write_text("x", encoding="utf-8")
    with pytest.raises(KBError):
        remove_document(tmp_path, "../outside.txt")
    assert outside.exists()


def test_reindexer_runs_one_at_a_time_and_loses_no_request(tmp_path):
    from kb.index import update_index
    from kb.search.searcher import Searcher
    from kb.serve.uploads import Reindexer

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("第一份文件\n\n年休假的规定。\n", encoding="utf-8")
    update_index(docs, tmp_path / "index", model="hash:64", progress=False)
    reindexer = Reindexer(tmp_path / "index")
    for i in range(5):  # asked while a run goes: served by one more run after it
        (docs / f"n{i}.txt").write_text(f"新增文件{i}\n\n第{i}条规定的内容。\n", encoding="utf-8")
        reindexer.request(docs)
    status = reindexer.wait(120)
    assert status["state"] == "done" and 1 <= status["runs"] <= 5 and not status.get("again")
    assert len(Searcher.load(tmp_path / "index").docs) == 6
    (docs / "late.txt").write_text("最后的文件\n\n补充规定。\n", encoding="utf-8")
    assert reindexer.request(docs)["state"] == "queued"  # the worker had ended: a new one starts
    assert reindexer.wait(120)["runs"] == status["runs"] + 1
    assert len(Searcher.load(tmp_path / "index").docs) == 7
