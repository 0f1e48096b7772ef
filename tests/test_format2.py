"""A committed format-2 index (tests/fixtures/format2: two segments, one deletion) is read
by this kb and answered exactly as recorded when it was written (make.py there). A change
to the on-disk format, the ids, the tokeniser or the ranking shows here first."""

from __future__ import annotations

import importlib.util
import json
import shutil

from .conftest import FIXTURES

FIXTURE = FIXTURES / "format2"


def test_the_committed_format2_index_answers_as_recorded(tmp_path):
    shutil.copytree(FIXTURE / "index", tmp_path / "index")
    spec = importlib.util.spec_from_file_location("make_format2", FIXTURE / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    got = json.loads(json.dumps(make.answers(tmp_path / "index"), ensure_ascii=False))
    assert got.keys() == expected.keys()
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert json.loads((tmp_path / "index" / "gen-000002" / "manifest.json").read_text())["format_version"] == 2
