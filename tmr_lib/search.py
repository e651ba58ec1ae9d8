"""Nearest-neighbour search with faiss: exact inner product, HNSW or IVF behind one factory.

    from tmr_lib.search import build_index
    index = build_index(cite_embeddings, ids=cite_gids)          # "flat": exact inner product
    ids, scores = index.search(query_embeddings, k=20)           # (Q, 20) gids, (Q, 20) cosine
    index.save("runs/cpu/index"); index = SearchIndex.load("runs/cpu/index")

``kind`` takes the short names ``"flat"``, ``"hnsw"``, ``"ivf"`` or any faiss
``index_factory`` string (``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ64"`` ...). Vectors
from the kit's encoders are L2-normalised, so inner product = cosine, and on unit vectors the
ranking equals Euclidean kNN. The 2nd place ran Euclidean kNN (cuML) on ensembles it did *not*
re-normalise, where the two rankings differ: ``metric="l2"`` is that search (scores are then
squared distances, smaller is nearer). On a machine with GPU faiss, ``use_gpu="auto"`` moves the
index there.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _name_openblas_core() -> str | None:
    """Tell faiss's bundled OpenBLAS which kernels to use, before faiss is loaded.

    The OpenBLAS inside the faiss-cpu wheels predates recent CPUs (AMD Zen 4/5 among them) and
    falls back to its slowest kernels there ("Prescott", SSE3): exact search 3-4x slower
    (benchmarks/bench_search.py). Unless ``OPENBLAS_CORETYPE`` is already set (or faiss already
    loaded), name the kernels the CPU's flags allow: SkylakeX (AVX-512) or Haswell (AVX2/FMA).
    Libraries that detect the CPU correctly (numpy's, scipy's) choose the same kernels anyway.
    """
    if os.environ.get("OPENBLAS_CORETYPE") or "faiss" in sys.modules:
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return None  # not Linux: leave OpenBLAS's own detection alone
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        core = "SkylakeX"
    elif {"avx2", "fma"} <= flags:
        core = "Haswell"
    else:
        return None
    os.environ["OPENBLAS_CORETYPE"] = core
    return core


_name_openblas_core()

__all__ = ["SearchIndex", "build_index", "factory_string", "brute_force_topk", "gpu_available"]


#: Database rows per BLAS block in faiss's exact search (faiss's default is 1024). Larger blocks
#: mean fewer, larger matrix products: 1,542 queries x 100k x 1024-d on 2 CPU cores took 8.4 s
#: instead of 12.9 s (``benchmarks/bench_search.py --default-block`` times both), for a temporary
#: (up to 4096 queries x 8192 rows) float32 block of at most 128 MiB.
EXACT_DB_BLOCK = 8192


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def factory_string(kind: str, n: int) -> str:
    """Short names -> faiss index_factory strings (IVF's list count grows with the database)."""
    k = kind.strip()
    low = k.lower()
    if low in ("flat", "exact", "ip", "flatip"):
        return "Flat"
    if low == "hnsw":
        return "HNSW32"
    if low == "ivf":
        nlist = int(max(1, min(65536, 4 * np.sqrt(max(n, 1)))))
        nlist = min(nlist, max(1, n // 39))  # faiss wants >= 39 training points per list
        return f"IVF{nlist},Flat"
    return k  # a faiss factory string as it is


def _as_float32(x: Any) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {arr.shape}")
    return arr


def brute_force_topk(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product in numpy (the reference the tests compare faiss with)."""
    sims = np.asarray(queries, np.float32) @ np.asarray(database, np.float32).T
    k = min(k, sims.shape[1])
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


class ArrayFlat:
    """Exact search over the vectors where they already are (RAM or a memory-mapped file).

    A faiss ``IndexFlat`` copies every vector into itself, so the database would be held twice
    (the caller's embeddings and the index's); ``faiss.knn`` runs the same exhaustive BLAS search
    on the caller's array. ``to_faiss()`` makes the real index (to save it)."""

    is_trained = True

    def __init__(self, vectors: np.ndarray, metric: str = "ip"):
        self.xb, self.metric = vectors, metric
        self.ntotal, self.d = int(vectors.shape[0]), int(vectors.shape[1])

    def _faiss_metric(self):
        import faiss

        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        return faiss.knn(queries, self.xb, k, metric=self._faiss_metric())

    def to_faiss(self):
        import faiss

        index = faiss.IndexFlat(self.d, self._faiss_metric())
        for i in range(0, self.ntotal, ADD_CHUNK):
            index.add(_as_float32(self.xb[i:i + ADD_CHUNK]))
        return index


class SearchIndex:
    """A faiss index over unit vectors plus the ids (gids) of its rows."""

    def __init__(self, index: Any, ids: np.ndarray, kind: str, nprobe: int | None = None,
                 ef_search: int | None = None, metric: str = "ip"):
        self.index = index
        self.metric = metric
        self.ids = np.asarray(ids).astype(str)
        self.kind = kind
        self.nprobe = nprobe
        self.ef_search = ef_search
        self._apply_params()

    # -- search --------------------------------------------------------------------------
    def _apply_params(self) -> None:
        import faiss

        base = self.index
        if isinstance(base, ArrayFlat):
            return
        if self.nprobe is not None:
            try:
                faiss.extract_index_ivf(base).nprobe = int(self.nprobe)
            except (RuntimeError, AttributeError):
                pass
        if self.ef_search is not None and hasattr(base, "hnsw"):
            base.hnsw.efSearch = int(self.ef_search)

    def set_params(self, nprobe: int | None = None, ef_search: int | None = None) -> SearchIndex:
        """Change the speed/recall knobs of a built index (IVF ``nprobe``, HNSW ``ef_search``)."""
        if nprobe is not None:
            self.nprobe = int(nprobe)
        if ef_search is not None:
            self.ef_search = int(ef_search)
        self._apply_params()
        return self

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def search_rows(self, queries: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers (Q, k) (-1 where fewer than k) and scores (Q, k): inner products, or squared
        distances for ``metric="l2"``."""
        q = _as_float32(queries)
        k = int(min(k, self.ntotal)) if self.ntotal else 0
        if self.kind == "Flat":
            import faiss

            if faiss.cvar.distance_compute_blas_database_bs < EXACT_DB_BLOCK:
                faiss.cvar.distance_compute_blas_database_bs = EXACT_DB_BLOCK
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        scores, rows = self.index.search(q, k)
        return rows, scores

    def search(self, queries: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Ids (Q, k) as strings ('' where an approximate index found fewer) and scores (Q, k)."""
        rows, scores = self.search_rows(queries, k)
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], "") if rows.size else \
            np.zeros(rows.shape, dtype=self.ids.dtype)
        return ids, scores

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """``folder/index.faiss`` + ``folder/ids.npy`` + ``folder/index.json``."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = self.index.to_faiss() if isinstance(self.index, ArrayFlat) else self.index
        if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
            index = faiss.index_gpu_to_cpu(index)
        faiss.write_index(index, str(folder / "index.faiss"))
        np.save(folder / "ids.npy", self.ids)
        (folder / "index.json").write_text(json.dumps(
            {"kind": self.kind, "ntotal": self.ntotal, "dim": int(index.d),
             "nprobe": self.nprobe, "ef_search": self.ef_search, "metric": self.metric}, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, use_gpu: bool | str = "auto") -> SearchIndex:
        import faiss

        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text())
        index = faiss.read_index(str(folder / "index.faiss"))
        index = _maybe_gpu(index, use_gpu)
        return cls(index, np.load(folder / "ids.npy"), meta["kind"], meta.get("nprobe"), meta.get("ef_search"),
                   meta.get("metric", "ip"))

    def __repr__(self) -> str:
        return f"SearchIndex({self.kind}, {self.ntotal} vectors, dim {self.index.d})"


def _maybe_gpu(index: Any, use_gpu: bool | str) -> Any:
    import faiss

    want = gpu_available() if use_gpu == "auto" else bool(use_gpu)
    if not want:
        return index
    if not gpu_available():
        raise RuntimeError("use_gpu=True but this faiss has no GPU support (pip install faiss-gpu-cu12)")
    if "HNSW" in type(index).__name__:  # faiss has no GPU HNSW; keep it on the CPU
        return index
    res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, 0, index)


def build_index(vectors: np.ndarray, ids: Any = None, kind: str = "flat", use_gpu: bool | str = "auto",
                nprobe: int | None = None, ef_search: int | None = None, ef_construction: int | None = None,
                train_size: int | None = None, train_iter: int | None = None, seed: int = 0,
                metric: str = "ip") -> SearchIndex:
    """A :class:`SearchIndex` over ``vectors`` (unit norm, inner product).

    ``ids``: one id per row (default: the row numbers). ``vectors`` may be float16 or a memory-mapped
    array: they are converted and added :data:`ADD_CHUNK` rows at a time. IVF is trained on a random
    ``train_size`` of them (default :data:`TRAIN_SAMPLE`; with ``train_iter`` k-means iterations
    instead of faiss's 25: k-means on 800k x 1024 is slow on a CPU);
    ``nprobe`` (IVF) and ``ef_search`` (HNSW) trade speed for recall at search time,
    ``ef_construction`` (HNSW, faiss default 40) graph quality for build time. ``metric``: "ip"
    (inner product, the default) or "l2" (Euclidean, the 2nd place's on un-normalised vectors). The HNSW graph
    degree M and the IVF list count are part of the factory string: ``"HNSW16"``, ``"IVF2048,Flat"``.
    """
    import faiss

    x = vectors if isinstance(vectors, np.ndarray) and vectors.ndim == 2 else _as_float32(vectors)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    n, d = x.shape
    ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric is 'ip' (inner product) or 'l2' (Euclidean), not {metric!r}")
    spec = factory_string(kind, n)
    if spec == "Flat" and not (use_gpu is True or (use_gpu == "auto" and gpu_available())):
        return SearchIndex(ArrayFlat(_as_float32(x), metric), ids, spec, metric=metric)  # no copy when float32
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)
    if "HNSW" in spec and ef_search is None:
        ef_search = 128
    if "IVF" in spec and nprobe is None:
        nprobe = 16
    if ef_construction is not None:
        try:
            faiss.downcast_index(index).hnsw.efConstruction = int(ef_construction)
        except AttributeError:
            pass
    if train_iter is not None:
        try:
            faiss.extract_index_ivf(index).cp.niter = int(train_iter)
        except (RuntimeError, AttributeError):
            pass
    index = _maybe_gpu(index, use_gpu)
    if not index.is_trained:
        train_size = train_size if train_size is not None else TRAIN_SAMPLE
        rows = (np.sort(np.random.default_rng(seed).choice(n, int(train_size), replace=False))
                if train_size < n else np.arange(n))
        index.train(_as_float32(x[rows]))
    for i in range(0, n, ADD_CHUNK):  # a chunk at a time: no second float32 copy of the whole database
        index.add(_as_float32(x[i:i + ADD_CHUNK]))
    return SearchIndex(index, ids, spec, nprobe=nprobe, ef_search=ef_search, metric=metric)


#: vectors added to an index per call (float32 copies are made a chunk at a time)
ADD_CHUNK = 65536
#: IVF / PQ indexes are trained on at most this many sampled vectors (faiss wants 39-256 per list)
TRAIN_SAMPLE = 262144
