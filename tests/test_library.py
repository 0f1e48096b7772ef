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
