"""The segmented index: updates write new segments and deletions, and a library cut into
segments ranks exactly as a fresh build of the same documents."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kb.embed.embedders import HashEmbedder
from kb.errors import IndexBusy, KBError, OldFormat, UnknownPassage
from kb.index import compact_index, update_index
from kb.index.local import plan_merge
from kb.search.searcher import Searcher
from kb.store.local.layout import IndexDir, read_manifest
from kb.text.process import sentence_spans

from .conftest import FIXTURES, ROOT, SAMPLE_DOC


def quiet(_msg: str) -> None:
    pass


def sentences() -> list[str]:
    text = SAMPLE_DOC.read_text(encoding="utf-8")
    return [text[s:e] for s, e in sentence_spans(text) if 8 <= e - s <= 120]


class Library:
    """A folder of documents changed at random; each version of a document carries a
    marker word of its own, so a search can tell whether an old version resurfaces."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.pool = sentences()
        self.version = 0
        self.live: dict[str, str] = {}  # file name -> marker of its current version
        self.gone: list[str] = []  # markers of versions deleted or replaced

    def _write(self, name: str) -> None:
        self.version += 1
        marker = f"标记{self.version:04d}号"
        paras = ["".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(1, 3)))
                 for _ in range(self.rng.randint(2, 5))]
        paras[self.rng.randrange(len(paras))] += f"本段含有{marker}。"
        (self.folder / name).write_text(f"文档{name}\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")
        if name in self.live:
            self.gone.append(self.live[name])
        self.live[name] = marker

    def add(self) -> None:
        self._write(f"d{self.version:04d}.txt")

    def change(self) -> None:
        if self.live:
            self._write(self.rng.choice(sorted(self.live)))

    def delete(self) -> None:
        if len(self.live) > 1:
            name = self.rng.choice(sorted(self.live))
            (self.folder / name).unlink()
            self.gone.append(self.live.pop(name))

    def step(self) -> None:
        for _ in range(self.rng.randint(1, 3)):
            self.rng.choice([self.add, self.add, self.change, self.delete])()


def counting_embedder() -> tuple[HashEmbedder, list[int]]:
    """A hash embedder that records how many texts each call encodes."""
    emb = HashEmbedder(64)
    calls: list[int] = []
    real = emb._encode
    emb._encode = lambda texts, is_query: calls.append(len(texts)) or real(texts, is_query)
    return emb, calls


QUERIES = ["组工干部如何服务", "创新机制", "学习贯彻讲话精神", "争做表率", "以人为本的服务理念",
           "提高组织工作科学化水平", "改革创新", "党员干部人才"]


def ranking(s: Searcher, query: str, mode: str = "hybrid") -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in s.search(query, k=10, mode=mode)]


def fresh_build(folder: Path, index: Path) -> Searcher:
    shutil.rmtree(index, ignore_errors=True)
    update_index(folder, index, model="hash:64", progress=False, warn=quiet)
    return Searcher.load(index)


def assert_same_as_fresh(seg: Searcher, fresh: Searcher) -> None:
    assert seg.count == fresh.count and sorted(d["path"] for d in seg.docs) == sorted(d["path"] for d in fresh.docs)
    for q in QUERIES:
        for mode in ("hybrid", "lexical", "dense"):
            assert ranking(seg, q, mode) == ranking(fresh, q, mode), (q, mode)


def test_random_updates_rank_exactly_as_a_fresh_build(tmp_path):
    """Property-style, fixed seed: after every round of random adds, changes and deletes,
    the segmented index gives the same top-10 (ids and scores) as a fresh build, in every
    mode; deleted or replaced versions never come back; compaction changes nothing."""
    lib = Library(tmp_path / "docs", seed=11)
    for _ in range(4):
        lib.add()
    index = tmp_path / "index"
    seen_segments = set()
    merged = 0
    for round_ in range(14):
        lib.step()
        r = update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
        merged += bool(r.merge)
        seg = Searcher.load(index)
        seen_segments.add(len(seg.snapshot.segments))
        for marker in lib.gone:  # deletions never resurface
            assert not [h for h in seg.search(marker, k=5, mode="lexical") if marker in h.text]
        for marker in list(lib.live.values())[:3]:
            assert any(marker in h.text for h in seg.search(marker, k=5, mode="lexical"))
        if round_ % 3 == 2 or round_ == 13:
            assert_same_as_fresh(seg, fresh_build(lib.folder, tmp_path / f"fresh{round_}"))
    assert max(seen_segments) > 2 and merged  # it really was segmented, and merged
    assert max(seen_segments) <= 11
    before = [ranking(seg, q) for q in QUERIES]
    report = compact_index(index)
    one = Searcher.load(index)
    assert report.segments == 1 and len(one.snapshot.segments) == 1
    assert [ranking(one, q) for q in QUERIES] == before
    assert_same_as_fresh(one, fresh_build(lib.folder, tmp_path / "fresh-final"))


def test_an_update_writes_only_what_changed(tmp_path):
    lib = Library(tmp_path / "docs", seed=3)
    for _ in range(20):
        lib.add()
    index = tmp_path / "index"
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    emb, calls = counting_embedder()
    lib.add()
    r = update_index(lib.folder, index, embedder=emb, progress=False, warn=quiet)
    m = read_manifest(IndexDir(index).require_current())
    assert r.added == 1 and r.segments == 2 and m["segments"][1]["docs"] == 1  # one small new segment
    assert sum(calls) == m["segments"][1]["rows"]  # only the new document was embedded
    name = sorted(lib.live)[0]
    old_ids = [p["id"] for p in Searcher.load(index).document(Searcher.load(index).docs[0]["doc_id"])["passages"]]
    (lib.folder / name).unlink()
    r = update_index(lib.folder, index, embedder=emb, progress=False, warn=quiet)
    m = read_manifest(IndexDir(index).require_current())
    assert r.removed == 1 and m["segments"][0]["deleted_docs"] == 1 and m["segments"][0]["deleted_rows"] > 0
    s = Searcher.load(index)
    with pytest.raises(UnknownPassage):
        s.passage(old_ids[0])
    assert s.count == m["passages"] == sum(e["rows"] - e["deleted_rows"] for e in m["segments"])


def test_merge_policy():
    def seg(name, rows, deleted=0):
        return {"name": name, "rows": rows, "docs": 1, "deleted_rows": deleted}

    assert plan_merge([seg("a", 1000)] + [seg(f"s{i}", 20) for i in range(9)]) == []  # 10 segments: fine
    groups = plan_merge([seg("a", 10**6)] + [seg(f"s{i}", 20) for i in range(10)])
    assert len(groups) == 1 and "a" not in groups[0] and len(groups[0]) == 10  # the small ones, never the big one
    assert plan_merge([seg("a", 1000, 201), seg("b", 1000, 200)]) == [["a"]]  # more than 20% deleted: purged
    # small segments merge together before a larger one is touched
    sizes = [10**6, 5000, 4000, 60, 40, 20, 20, 20, 20, 20, 20]
    group = plan_merge([seg(f"s{i}", n) for i, n in enumerate(sizes)])[0]
    assert {"s0", "s1", "s2"}.isdisjoint(group)


def test_a_format1_index_is_migrated_without_embedding_again(tmp_path):
    src = FIXTURES / "format1"
    shutil.copytree(src / "docs", tmp_path / "docs")
    shutil.copytree(src / "index", tmp_path / "index")
    index = tmp_path / "index"
    with pytest.raises(OldFormat, match="kb index"):
        Searcher.load(index)
    with pytest.raises(OldFormat):
        compact_index(index)
    emb, calls = counting_embedder()
    r = update_index(tmp_path / "docs", index, embedder=emb, progress=False, warn=quiet)
    migrated = Searcher.load(index)
    rows = migrated.snapshot.rows(range(migrated.count)).values()
    outlines = len({row["parent"] for row in rows if row["parent"] is not None})
    # every vector reused but the outlines of paragraphs with sub-points (embedded so since pipeline 9)
    assert r.updated and r.segments == 1 and r.documents == 2 and sum(calls) == outlines > 0
    assert r.reused == r.passages - outlines
    assert migrated.manifest["format_version"] == 2
    assert_same_as_fresh(migrated, fresh_build(tmp_path / "docs", tmp_path / "fresh"))
    # --rebuild works on an old format too, still reusing its vectors
    shutil.rmtree(index)
    shutil.copytree(src / "index", index)
    emb, calls = counting_embedder()
    r = update_index(tmp_path / "docs", index, embedder=emb, rebuild=True, progress=False, warn=quiet)
    assert r.documents == 2 and sum(calls) == outlines


def test_a_killed_merge_leaves_every_segment_valid(tmp_path, monkeypatch):
    lib = Library(tmp_path / "docs", seed=5)
    index = tmp_path / "index"
    for _ in range(4):
        lib.add()
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    for _ in range(10):
        lib.add()
        update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet, merge=False)
    before = Searcher.load(index)
    assert len(before.snapshot.segments) == 11
    expected = [ranking(before, q) for q in QUERIES]

    import kb.store.local.segments

    real = kb.store.local.segments.SegmentWriter.finish

    class Killed(BaseException):
        pass

    def die(self, *a, **k):
        raise Killed

    monkeypatch.setattr(kb.store.local.segments.SegmentWriter, "finish", die)
    with pytest.raises(Killed):
        compact_index(index)
    monkeypatch.setattr(kb.store.local.segments.SegmentWriter, "finish", real)
    after = Searcher.load(index)  # the previous generation, whole
    assert len(after.snapshot.segments) == 11 and [ranking(after, q) for q in QUERIES] == expected
    lib.add()
    r = update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)  # resumes, merges
    assert r.merge and r.segments < 11
    assert not [p for p in IndexDir(index).segments_dir.iterdir() if p.name.endswith(".tmp")]


KILL_MERGE = """
import sys
from kb.index import compact_index
compact_index(sys.argv[1])
"""


@pytest.mark.processes
def test_sigkill_during_compaction(tmp_path):
    lib = Library(tmp_path / "docs", seed=9)
    index = tmp_path / "index"
    for i in range(40):
        lib.add()
        if i % 4 == 3:
            update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet, merge=False)
    expected = {q: ranking(Searcher.load(index), q) for q in QUERIES[:3]}
    rng = random.Random(1)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_MERGE, str(index)], env=env)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = Searcher.load(index)  # before or after the merge: either way the same answers
        assert {q: ranking(s, q) for q in QUERIES[:3]} == expected
    compact_index(index)
    assert {q: ranking(Searcher.load(index), q) for q in QUERIES[:3]} == expected


def test_a_second_writer_is_refused_during_compaction(tmp_path):
    lib = Library(tmp_path / "docs", seed=2)
    lib.add()
    index = tmp_path / "index"
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    with IndexDir(index).writer_lock():
        with pytest.raises(IndexBusy, match="another"):
            compact_index(index)


def test_a_running_searcher_keeps_answering_and_readers_are_shared(tmp_path):
    lib = Library(tmp_path / "docs", seed=4)
    for _ in range(5):
        lib.add()
    index = tmp_path / "index"
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    old = Searcher.load(index)
    lib.add()
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    assert old.is_stale()
    new = Searcher.load(index)
    assert new.snapshot.segments[0] is old.snapshot.segments[0]  # the unchanged segment is opened once
    assert old.search("争做表率", k=3) and new.count > old.count
    compact_index(index)  # old segments are removed from disk; open readers keep serving
    assert old.search("争做表率", k=3) and new.search("争做表率", k=3)


def test_a_missing_deletion_list_is_a_one_line_error(tmp_path):
    lib = Library(tmp_path / "docs", seed=8)
    for _ in range(12):  # one deletion stays below the purge threshold
        lib.add()
    index = tmp_path / "index"
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    lib.delete()
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    gen = IndexDir(index).require_current()
    for f in (gen / "deleted").iterdir():
        f.unlink()
    with pytest.raises(KBError, match=r"deleted/seg-000001.npy is missing.*--rebuild"):
        Searcher.load(index)
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet, rebuild=True)
    assert Searcher.load(index).count > 0


def test_stats_report_segments(tmp_path):
    lib = Library(tmp_path / "docs", seed=6)
    for _ in range(3):
        lib.add()
    index = tmp_path / "index"
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    lib.add()
    update_index(lib.folder, index, model="hash:64", progress=False, warn=quiet)
    st = Searcher.load(index).stats()
    assert [e["name"] for e in st["segments"]] == ["seg-000001", "seg-000002"]
    assert st["passages"] == sum(e["rows"] - e["deleted_rows"] for e in st["segments"])
    assert json.dumps(st)  # serialisable
    assert np.isfinite(st["size_bytes"])
