"""Dense vectors in FAISS. Inner product on L2-normalised vectors = cosine."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np

from kb.store.local.layout import fsync_file, save_array

# Exact search below this many vectors; an HNSW graph above. efSearch 256 keeps recall@10
# at 0.98+ against exact search on real e5 embeddings (benchmarks/recall.py).
EXACT_LIMIT = 200_000
# Below this many vectors (small segments), float32 in memory: a few MB, and no row reads.
SMALL_LIMIT = 10_000
EF_SEARCH = 256
# Graph construction: 94% of a 1M-passage build went into the HNSW graph at efConstruction 80;
# 40 halves that (measured: 50k random 384-d vectors, 97.8 s -> 48.9 s on 2 cores) for a small
# loss of recall on random vectors, the worst case (0.636 -> 0.588 at efSearch 256).
EF_CONSTRUCTION = 40
# Kinds of vector index:
#   flat  exact search over float32 vectors;
#   fp16  search over float16 vectors in memory (half the memory, no slower); the float32
#         vectors stay in a file beside it, read row by row to score the candidates exactly,
#         so rankings equal float32's (the default from SMALL_LIMIT to EXACT_LIMIT; flat below);
#   hnsw  approximate search through an HNSW graph over float32 vectors (default above).
KINDS = ("auto", "flat", "fp16", "hnsw")


def exact_path(path: str | Path) -> Path:
    """Where an fp16 index keeps its float32 vectors: ``vectors.faiss`` -> ``vectors.f32.npy``."""
    path = Path(path)
    return path.with_name(path.stem + ".f32.npy")


class RowFile:
    """Rows of a float32 ``.npy`` matrix read on demand with ``pread``: no copy in memory, and
    unlike a memory map, rows read do not stay in the process's resident set. The open file
    keeps serving even after its generation folder is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or dtype != np.float32 or len(shape) != 2:
            raise ValueError(f"{path}: not a float32 matrix")
        self.count, self.dim = shape
        self.row_bytes = self.dim * 4
        self.fd = os.open(path, os.O_RDONLY)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for i, r in enumerate(rows):
            out[i] = np.frombuffer(os.pread(self.fd, self.row_bytes, self.offset + int(r) * self.row_bytes),
                                   dtype=np.float32)
        return out

    def all(self) -> np.ndarray:
        return np.fromfile(self.path, dtype=np.float32, offset=self.offset).reshape(self.count, self.dim)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close  # a searcher dropped from a cache without close() does not leak its file


def _faiss():
    import faiss

    return faiss


def _write_error(e: RuntimeError, path: Path) -> OSError:
    """faiss' "write error in …: 28 (No space left on device)" as the OSError it was."""
    m = re.search(r"(\d+) \(([^)]+)\)\s*$", str(e))
    if m:
        return OSError(int(m.group(1)), m.group(2), path.name)
    return OSError(errno.EIO, f"writing {path.name} failed ({str(e)[:120]})", path.name)


class VectorIndex:
    def __init__(self, index, kind: str, exact: np.ndarray | RowFile | None = None) -> None:
        self.index = index
        self.kind = kind
        self.exact = exact  # float32 rows behind an fp16 index: in memory when built, a RowFile when loaded

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, dim: int, kind: str = "auto", hnsw_m: int = 32,
              ef_construction: int = EF_CONSTRUCTION, ef_search: int = EF_SEARCH) -> VectorIndex:
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        if kind == "auto":
            kind = "flat" if len(vectors) < SMALL_LIMIT else "fp16" if len(vectors) < EXACT_LIMIT else "hnsw"
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "fp16":
            index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"unknown vector index kind {kind!r} ({', '.join(KINDS)})")
        if len(vectors):
            index.add(vectors)
        return cls(index, kind, exact=vectors if kind == "fp16" else None)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and cosine scores of the ``k`` nearest vectors, best first (no ``-1``);
        only among the rows where the boolean mask ``allowed`` is true when it is given."""
        limit = self.count if allowed is None else int(np.count_nonzero(allowed))
        if limit == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        params = None
        if allowed is not None and limit < self.count:
            faiss = _faiss()
            bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
            params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(self.count, faiss.swig_ptr(bitmap)))
        scores, ids = self.index.search(q, min(k, limit), params=params)
        keep = ids[0] >= 0
        rows, scores = ids[0][keep].astype(np.int64), scores[0][keep]
        if self.exact is not None and len(rows):  # float16 found them; float32 scores and orders them
            scores = self.vectors(rows) @ q[0]
            order = np.argsort(-scores, kind="stable")
            rows, scores = rows[order], scores[order]
        return rows, scores

    def vectors(self, rows: np.ndarray | list[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if isinstance(self.exact, RowFile):
            return self.exact.rows(rows)
        if self.exact is not None:
            return self.exact[rows]
        return np.vstack([self.index.reconstruct(int(r)) for r in rows])

    def all_vectors(self) -> np.ndarray:
        if self.count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if isinstance(self.exact, RowFile):
            return self.exact.all()
        if self.exact is not None:
            return self.exact
        return self.index.reconstruct_n(0, self.count)

    def save(self, path: str | Path) -> None:
        faiss = _faiss()
        try:
            faiss.write_index(self.index, str(path))
        except RuntimeError as e:  # faiss reports a failed write (a full disk) as RuntimeError
            raise _write_error(e, Path(path)) from e
        fsync_file(Path(path))
        if self.exact is not None:
            save_array(exact_path(path), self.all_vectors())

    def close(self) -> None:
        if isinstance(self.exact, RowFile):
            self.exact.close()

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        faiss = _faiss()
        index = faiss.read_index(str(path))
        name = type(index).__name__
        kind = "hnsw" if "HNSW" in name else "fp16" if "ScalarQuantizer" in name else "flat"
        if kind == "hnsw":
            index.hnsw.efSearch = EF_SEARCH
        exact = None
        if kind == "fp16" and exact_path(path).exists():
            exact = RowFile(exact_path(path))
            if (exact.count, exact.dim) != (index.ntotal, index.d):
                exact.close()
                raise ValueError(f"{exact.path}: {exact.count}x{exact.dim} vectors, the index has "
                                 f"{index.ntotal}x{index.d}")
        return cls(index, kind, exact=exact)
