"""The FAISS side of the QaDS selector: k-means anchors and coverage by flat-index search.

Farthest-point traversal itself runs on `kcenter.kcenter_greedy`'s running minimum, which
`benchmarks/kcenter.py` measured faster than FAISS flat search for that job (README, "QaDS";
benchmarks/RESULTS.md). FAISS does what it is built for: k-means over the pool (anchors) and
nearest-neighbour search of every row against the selected rows (coverage), on the CPU or, with
a GPU build of FAISS, on the GPU (`device="cuda"`).
"""

from __future__ import annotations

import numpy as np

ANCHOR_METHODS = ("kmeans", "random")
DEVICES = ("cpu", "cuda")
_SEARCH_BATCH = 65_536


def _check_device(device: str) -> None:
    """Raise ValueError for an unknown device and RuntimeError for `cuda` without a GPU build of FAISS."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
    if device == "cuda":
        import faiss

        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
            raise RuntimeError("device='cuda' needs a GPU build of FAISS (faiss-gpu) and a CUDA GPU; found neither")


def flat_index(rows: np.ndarray, device: str = "cpu"):
    """A FAISS exact L2 index (`IndexFlatL2`) holding `rows` (n, d) float32, on the CPU or moved to
    GPU 0 (`device="cuda"`; the GPU resources stay referenced by the index)."""
    import faiss

    _check_device(device)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    index = faiss.IndexFlatL2(rows.shape[1])
    if device == "cuda":
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        index.referenced_objects = [resources]
    index.add(rows)
    return index


def choose_anchors(
    embeddings: np.ndarray, m: int = 100, method: str = "kmeans", seed: int = 0, device: str = "cpu"
) -> np.ndarray:
    """Row indices (sorted, distinct) of `min(m, n)` anchors among the n rows of `embeddings` (n, d).

    `kmeans`: FAISS k-means with m centroids (20 iterations, `seed`; on the GPU with
    `device="cuda"`), then for each centroid the nearest row not already taken (centroids closest
    to a row choose first). `random`: a seeded uniform sample without replacement.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {x.shape}")
    if method not in ANCHOR_METHODS:
        raise ValueError(f"method must be one of {ANCHOR_METHODS}, got {method!r}")
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    n = len(x)
    m = min(m, n)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)).astype(np.int64)
    import faiss

    _check_device(device)
    kmeans = faiss.Kmeans(x.shape[1], m, niter=20, seed=seed, gpu=device == "cuda")
    kmeans.train(x)
    return _distinct_nearest_rows(flat_index(x, device), kmeans.centroids, n)


def _distinct_nearest_rows(index, centroids: np.ndarray, n: int) -> np.ndarray:
    """For each centroid the nearest row of `index` not taken by an earlier centroid (centroids
    nearest to their first neighbour choose first); the neighbour lists are searched again, four
    times longer, until every centroid finds a free row."""
    k = min(n, 16)
    while True:
        distances, rows = index.search(centroids, k)
        taken: set[int] = set()
        for c in np.argsort(distances[:, 0], kind="stable"):
            free = [int(r) for r in rows[c] if r >= 0 and int(r) not in taken]
            if not free:
                break
            taken.add(free[0])
        if len(taken) == len(centroids) or k == n:
            return np.asarray(sorted(taken), dtype=np.int64)
        k = min(n, k * 4)


def nearest_distances(x: np.ndarray, centers: np.ndarray, device: str = "cpu") -> np.ndarray:
    """L2 distance (float32, (n,)) of every row of `x` (n, d) to its nearest row of `centers`
    (k, d), by one FAISS flat index over the centers searched in batches; inf when k = 0."""
    x = np.asarray(x, dtype=np.float32)
    if len(centers) == 0:
        return np.full(len(x), np.inf, dtype=np.float32)
    index = flat_index(centers, device)
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), _SEARCH_BATCH):
        squared, _ = index.search(np.ascontiguousarray(x[start : start + _SEARCH_BATCH]), 1)
        out[start : start + len(squared)] = np.sqrt(np.maximum(squared[:, 0], 0))
    return out


def coverage(x: np.ndarray, selected: np.ndarray, device: str = "cpu") -> dict[str, float]:
    """How well the selected rows cover all rows of `x`: the distance of each row to its nearest
    selected row (`nearest_distances`), summarised as radius (the k-center objective), mean, p50
    and p90. `selected` is a boolean mask (n,); no selected row gives inf, no row at all zeros."""
    if len(x) == 0:
        return {"radius": 0.0, "mean": 0.0, "p50": 0.0, "p90": 0.0}
    distances = nearest_distances(x, np.asarray(x)[np.asarray(selected, dtype=bool)], device)
    return {
        "radius": float(distances.max()),
        "mean": float(distances.mean()),
        "p50": float(np.percentile(distances, 50)),
        "p90": float(np.percentile(distances, 90)),
    }
