"""`kb index --ray`: encoder actors on a local Ray cluster (ray.init with this machine's
cores) embed; the driver writes. The result is the index a plain run builds."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from kb.index import update_index  # noqa: E402
from kb.search.searcher import Searcher  # noqa: E402

from .test_segments import QUERIES, quiet  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for the module, started with kb's retry on a slow node start (a busy
    CI machine), so the test measures kb, not how fast Ray comes up."""
    import os

    import ray

    from kb.embed.ray import start_ray

    start_ray(num_cpus=os.cpu_count() or 1)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_embeds_what_a_plain_run_embeds_and_the_driver_writes_milvus(tmp_path, corpus, ray_cluster):
    pytest.importorskip("pymilvus")
    from kb.store.milvus import library as milvus

    (corpus / "more.txt").write_text("第二篇\n\n" + "\n\n".join(f"第{i}段：关于农业科技推广的内容{i}。" * 3
                                                               for i in range(30)), encoding="utf-8")
    plain, store = tmp_path / "plain", str(tmp_path / "kb.db")
    a = update_index(corpus, plain, model="hash:64", progress=False, warn=quiet)
    try:
        b = update_index(corpus, store, model="hash:64", progress=False, warn=quiet, ray=True)
        assert b.embedded == a.embedded == a.passages > 30
        x, y = Searcher.load(plain), Searcher.load(store)
        for q in QUERIES + ["农业科技推广"]:
            assert [h.id for h in x.search(q, k=10)] == [h.id for h in y.search(q, k=10)], q
        pid = x.search("农业科技推广", k=1)[0].id
        vx, vy = x.snapshot.vectors([x.passage(pid)["row"]]), y.snapshot.vectors([y.passage(pid)["row"]])
        assert (abs(vx - vy) < 1e-6).all()
    finally:
        milvus.release(store)


def test_a_slow_ray_node_start_is_tried_again_and_other_failures_are_not(monkeypatch):
    import ray

    from kb.embed.ray import start_ray

    calls: list[dict] = []

    def init(**kw):
        calls.append(kw)
        if len(calls) == 1:
            raise Exception("The current node timed out during startup. This could happen because ...")
        if kw.get("address") == "bad":
            raise ConnectionError("no cluster there")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    start_ray(num_cpus=1)
    assert len(calls) == 2
    with pytest.raises(ConnectionError):
        start_ray(address="bad")
    assert len(calls) == 3
