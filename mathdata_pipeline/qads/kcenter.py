"""K-center greedy (farthest-point traversal, Sener & Savarese 2018) over L2 distances of rows.

`kcenter_greedy` keeps, for every row, the squared distance to its nearest center and updates it
once per new center s with d²(x, s) = |x|² + |s|² − 2·x·s (cached squared norms, one dot product
per row). Rows are processed in blocks, and three things make it cheaper than a full scan:

- per-block maxima of the running minimum, so the next pick is found without rescanning all rows;
- `prune`: rows are reordered by a seeded FAISS k-means (blocks = pieces of one cluster, so they
  are spatially coherent) and each block keeps its mean c_B, radius r_B and the largest current
  minimum u_B. If ||s − c_B|| − r_B ≥ u_B, no row of the block can get closer to s than to its
  current center, and the block is skipped (with a rounding margin, so a skip never changes a
  value that the full scan would have changed);
- `storage="float16"`: the matrix is stored in half the bytes; dot products accumulate in float32
  (torch's CPU kernel) and are rounded to float16 on output.

Semantics:
- `k` counts NEW picks. `initial` rows are centers before the first pick; they are never picked
  again and do not count toward `k` or toward quotas. Without `initial`, the first pick is the
  seeded random row `rng.integers(n)` (`rng = np.random.default_rng(seed)`); with quotas, the
  seeded random choice among the rows of groups that still have room.
- Ties (equal covering distances) go to the lowest original row index.
- Quotas cap the new picks per group. Rows of a full group are no longer picked, but they still
  count as points to cover: their distances keep being updated and `final_radius` includes them.
- `bonus` (QaDS's weighted rule, METHODS.md §1.3 C3): each step picks argmax(min-distance +
  bonus) instead of argmax(min-distance), with the same scan, quotas, ties and determinism; the
  per-block maxima are then kept over that score (one extra pass over the updated rows' minima).
- Rows are scaled by a power of two (max row norm ≤ 1) before storage; this is exact in float32.

Determinism: for float32 storage each row's dot product is computed by `np.vecdot`, whose result
for a row does not depend on where the row sits in memory or in which run it is processed, so the
picks are identical for every `block_size`, with or without pruning, and on every k-means layout.
They equal `kcenter_reference`'s picks except where two candidates' covering distances differ by
less than the float32 rounding of the expansion (about 1e-7 relative). float16 storage rounds
every coordinate by up to 2**-11 relative (|Δd| ≤ 2·2**-11·max-norm between the rounded and the
original points) and every dot product by up to 2**-11·max-norm²; it selects farthest-first on the
rounded points, so its picks can differ from float32's wherever candidates are that close; the
benchmark reports the objective difference. `device="cuda"` runs the same rules on the GPU
(dense scan, no pruning); its rounding differs from the CPU kernels, so near-ties can resolve
differently there.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

STORAGES = ("float32", "float16")
DEVICES = ("cpu", "cuda")
DEFAULT_BLOCK_SIZE = 512
_CHUNK_ROWS = 65_536  # rows per chunk when copying or validating
_PARALLEL_MIN_ROWS = 16_384  # rows per thread below which an update stays on one thread
_KMEANS_ITERATIONS = 10
_KMEANS_POINTS_PER_CENTROID = 64
_RADIUS_SLACK = 1e-5  # relative slack on block radii (they are upper bounds)


@dataclass(frozen=True)
class KCenterResult:
    """The outcome of a k-center greedy run.

    indices: np.int64 (k,), original row indices in pick order. min_distance: np.float32 (k,),
    each pick's distance to the nearest earlier center (inf for a seeded-random first pick);
    without quotas or bonus this is the covering radius just before the pick, and it never increases.
    final_radius: the largest distance from any row to its nearest center after the last pick
    (the k-center objective; inf when there are no centers). stats: blocks_visited,
    blocks_skipped, rows_updated, seconds, plus blocks and layout_seconds.
    """

    indices: np.ndarray
    min_distance: np.ndarray
    final_radius: float
    stats: dict


@dataclass(frozen=True)
class _Problem:
    """Validated inputs: rows, new picks, core set, per-row group codes, quota per group code and
    the per-row pick bonus (float64, original units)."""

    x: np.ndarray
    k: int
    initial: np.ndarray
    group_codes: np.ndarray | None
    quota_left: np.ndarray | None
    bonus: np.ndarray | None = None


def _validate(
    x: np.ndarray,
    k: int,
    initial: Sequence[int],
    groups: np.ndarray | None,
    quotas: Mapping[Hashable, int] | None,
    bonus: np.ndarray | None = None,
) -> _Problem:
    """Check every input and raise ValueError naming the problem (row, field or count)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must be a non-empty 2-D array (n, d); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x must hold real numbers; got dtype {x.dtype}")
    n = x.shape[0]
    for start in range(0, n, _CHUNK_ROWS):
        bad = ~np.isfinite(x[start : start + _CHUNK_ROWS]).all(axis=1)
        if bad.any():
            raise ValueError(f"x row {start + int(np.argmax(bad))} has a NaN or infinite value")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer; got {k!r}")
    core = np.asarray(list(initial))
    if core.size and not np.issubdtype(core.dtype, np.integer):
        raise ValueError(f"initial must hold row indices (integers); got dtype {core.dtype}")
    core = core.astype(np.int64)
    if core.size and (core.min() < 0 or core.max() >= n):
        bad_row = int(core[(core < 0) | (core >= n)][0])
        raise ValueError(f"initial row {bad_row} is outside 0..{n - 1}")
    if len(np.unique(core)) != len(core):
        raise ValueError("initial lists a row more than once")
    if k > n - len(core):
        raise ValueError(f"k={k} exceeds the {n - len(core)} rows that are not already in `initial` (x has {n} rows)")
    if quotas is not None and groups is None:
        raise ValueError("quotas need groups (one group label per row of x)")
    if bonus is not None:
        bonus = np.asarray(bonus, dtype=np.float64)
        if bonus.shape != (n,):
            raise ValueError(f"bonus must hold one value per row of x ({n}); got shape {bonus.shape}")
        if not np.isfinite(bonus).all():
            raise ValueError(f"bonus row {int(np.argmax(~np.isfinite(bonus)))} is NaN or infinite")
    labels = None if groups is None else np.asarray(groups)
    if labels is not None and (labels.ndim != 1 or len(labels) != n):
        raise ValueError(f"groups has {len(labels)} entries but x has {n} rows")
    if labels is None or quotas is None:
        return _Problem(x, int(k), core, None, None, bonus)
    names, codes = np.unique(labels, return_inverse=True)
    code_of = {name: code for code, name in enumerate(names.tolist())}
    quota_left = np.full(len(names), n, dtype=np.int64)
    for name, quota in quotas.items():
        if isinstance(quota, bool) or not isinstance(quota, (int, np.integer)) or quota < 0:
            raise ValueError(f"quota for group {name!r} must be a non-negative integer; got {quota!r}")
        if name in code_of:
            quota_left[code_of[name]] = quota
    codes = codes.astype(np.int64)
    free = np.ones(n, dtype=bool)
    free[core] = False
    allowed = int(np.minimum(quota_left, np.bincount(codes[free], minlength=len(names))).sum())
    if k > allowed:
        raise ValueError(f"k={k} exceeds the {allowed} picks that the quotas allow")
    return _Problem(x, int(k), core, codes, quota_left, bonus)


def _power_of_two_scale(x: np.ndarray) -> float:
    """Smallest power of two >= the largest row norm (1.0 for an all-zero matrix)."""
    largest = 0.0
    for start in range(0, len(x), _CHUNK_ROWS):
        chunk = np.asarray(x[start : start + _CHUNK_ROWS], dtype=np.float64)
        largest = max(largest, float(np.sqrt(np.einsum("ij,ij->i", chunk, chunk).max())))
    return 2.0 ** math.ceil(math.log2(largest)) if largest > 0 else 1.0


def _scaled_rows(x: np.ndarray, rows: np.ndarray, scale: float) -> np.ndarray:
    """float32 copy of `x[rows] / scale` (exact: scale is a power of two)."""
    return np.asarray(x[rows], dtype=np.float32) * np.float32(1.0 / scale)


@dataclass(frozen=True)
class _Layout:
    """Row order and blocks: `order[p]` is the original index of stored row p; block j holds
    stored rows starts[j]:starts[j+1], sorted by original index inside the block."""

    order: np.ndarray
    starts: np.ndarray


def _even_pieces(size: int, block_size: int) -> np.ndarray:
    """Boundaries (relative, with 0 and size) cutting `size` rows into near-equal pieces <= block_size."""
    pieces = max(1, -(-size // block_size))
    return (np.arange(pieces + 1) * size) // pieces


def _cluster_layout(x: np.ndarray, scale: float, block_size: int, seed: int) -> _Layout:
    """Order rows by a seeded FAISS k-means with about n / block_size clusters.

    The clusters are trained on a seeded sample of at most 64 rows per centroid; every row is
    then assigned to its nearest centroid, rows are sorted by (cluster, original index), and each
    cluster is cut into near-equal blocks of at most `block_size` rows.
    """
    import faiss

    n, d = x.shape
    clusters = -(-n // block_size)
    if clusters < 2:
        return _Layout(np.arange(n, dtype=np.int64), np.array([0, n], dtype=np.int64))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, clusters * _KMEANS_POINTS_PER_CENTROID), replace=False))
    kmeans = faiss.Kmeans(
        d,
        clusters,
        niter=_KMEANS_ITERATIONS,
        seed=int(seed) % (2**31),
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=_KMEANS_POINTS_PER_CENTROID,
    )
    kmeans.train(np.ascontiguousarray(_scaled_rows(x, sample, scale)))
    assignment = np.empty(n, dtype=np.int64)
    for start in range(0, n, _CHUNK_ROWS):
        rows = np.arange(start, min(n, start + _CHUNK_ROWS))
        assignment[rows] = kmeans.index.search(np.ascontiguousarray(_scaled_rows(x, rows, scale)), 1)[1][:, 0]
    order = np.argsort(assignment, kind="stable")
    sizes = np.bincount(assignment, minlength=clusters)
    cluster_starts = np.concatenate([[0], np.cumsum(sizes)])
    starts = [cluster_starts[c] + _even_pieces(int(sizes[c]), block_size)[:-1] for c in range(clusters) if sizes[c]]
    return _Layout(order.astype(np.int64), np.concatenate(starts + [[n]]).astype(np.int64))


def _plain_layout(n: int, block_size: int) -> _Layout:
    """Rows in their original order, cut into blocks of `block_size` rows."""
    return _Layout(np.arange(n, dtype=np.int64), np.append(np.arange(0, n, block_size), n).astype(np.int64))


class _BlockTraversal:
    """CPU state of a traversal: stored rows, running squared min-distances and block bounds.

    Stored rows are scaled (max norm <= 1) and permuted by the layout. `min_d2[p]` is the squared
    distance of stored row p to its nearest center (inf before the first center, -1 for a center).
    """

    def __init__(
        self,
        x: np.ndarray,
        scale: float,
        layout: _Layout,
        storage: str,
        prune: bool,
        pool: ThreadPoolExecutor,
        workers: int,
        bonus: np.ndarray | None = None,
    ):
        n, d = x.shape
        self.order, self.starts, self.prune, self.pool, self.workers = layout.order, layout.starts, prune, pool, workers
        self.storage = storage
        self.rows = np.empty((n, d), dtype=np.float16 if storage == "float16" else np.float32)
        self.sq_norms = np.empty(n, dtype=np.float32)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(n, start + _CHUNK_ROWS)
            self.rows[start:stop] = _scaled_rows(x, self.order[start:stop], scale)
            stored = self.rows[start:stop].astype(np.float32)
            self.sq_norms[start:stop] = np.vecdot(stored, stored)
        # Bound on |computed d² − exact d²| for scaled rows: float32 dot products of length d, plus
        # for float16 the rounding of each dot product to float16 (≤ 2**-11, doubled in d²).
        self.eps = (4 * d + 16) * 2.0**-24 + (2.0**-10 if storage == "float16" else 0.0)
        if storage == "float16":
            import torch

            self.torch = torch
            self.rows_t = torch.from_numpy(self.rows)
            self.dots16 = torch.empty(n, dtype=torch.float16)
        self.dots = np.empty(n, dtype=np.float32)
        blocks = len(self.starts) - 1
        self.block_of = np.repeat(np.arange(blocks), np.diff(self.starts))
        if prune:
            self.centers = np.empty((blocks, d), dtype=np.float32)
            self.radius = np.empty(blocks, dtype=np.float32)
            for j in range(blocks):
                block = self.rows[self.starts[j] : self.starts[j + 1]].astype(np.float32)
                self.centers[j] = block.mean(axis=0, dtype=np.float64)
                spread = np.sqrt(np.max(np.einsum("ij,ij->i", block - self.centers[j], block - self.centers[j])))
                self.radius[j] = spread * (1 + _RADIUS_SLACK) + 1e-6
            self.center_sq = np.vecdot(self.centers, self.centers)
        self.min_d2 = np.full(n, np.inf, dtype=np.float32)
        self.block_max = np.full(blocks, np.inf, dtype=np.float32)
        self.excluded: np.ndarray | None = None  # stored rows that may not be picked (quotas)
        # pick score bonus of each stored row, in scaled units (None: the score is min_d2 itself)
        self.bonus = None if bonus is None else (bonus[self.order] / scale).astype(np.float32)
        # per-block max of the pick score over pickable rows (an alias of block_max while they agree)
        self.block_best = self.block_max if bonus is None else np.full(blocks, np.inf, dtype=np.float32)
        self.stats = {"blocks": blocks, "blocks_visited": 0, "blocks_skipped": 0, "rows_updated": 0}

    def _dot(self, start: int, stop: int, center: np.ndarray) -> np.ndarray:
        """float32 dot products of stored rows start:stop with the stored center row."""
        out = self.dots[start:stop]
        if self.storage == "float16":
            self.torch.mv(self.rows_t[start:stop], center, out=self.dots16[start:stop])
            np.copyto(out, self.dots16[start:stop].numpy())
        else:
            np.vecdot(self.rows[start:stop], center, out=out)
        return out

    def _update_blocks(self, blocks: np.ndarray, center: np.ndarray, center_sq: np.float32) -> None:
        """Lower the running minima of the rows of `blocks` (sorted block ids) with the new center,
        one contiguous run of blocks at a time, and refresh those blocks' maxima."""
        breaks = np.flatnonzero(np.diff(blocks) != 1)
        for first, last in zip(blocks[np.r_[0, breaks + 1]], blocks[np.r_[breaks, -1]] + 1):
            a, b = self.starts[first], self.starts[last]
            d2 = self._dot(a, b, center)
            d2 *= -2
            d2 += self.sq_norms[a:b]
            d2 += center_sq
            np.minimum(self.min_d2[a:b], d2, out=self.min_d2[a:b])
            self._refresh(first, last)

    def _visited_blocks(self, center32: np.ndarray, center_sq: np.float32) -> np.ndarray:
        """Blocks the new center can change; with pruning, the triangle-inequality survivors."""
        if not self.prune:
            return np.arange(len(self.block_max))
        to_centers = self.center_sq + center_sq - 2 * (self.centers @ center32)
        gap = np.sqrt(np.maximum(to_centers - self.eps, 0)) - self.radius
        skip = (gap > 0) & (gap * gap - self.eps >= self.block_max)
        return np.flatnonzero(~skip)

    def _score(self, a: int, b: int) -> np.ndarray:
        """Pick score of stored rows a:b: min_d2, or sqrt(min_d2) + bonus; -inf for centers and
        excluded rows (a center's min_d2 is exactly -1; computed values are > -0.5)."""
        score = self.min_d2[a:b]
        if self.bonus is not None:
            score = np.where(score < -0.5, -np.inf, np.sqrt(np.maximum(score, 0)) + self.bonus[a:b])
        if self.excluded is not None:
            score = np.where(self.excluded[a:b], -np.inf, score)
        return score

    def _refresh(self, first: int, last: int) -> None:
        """Recompute the maxima of blocks first..last-1 (a contiguous run)."""
        a, b = self.starts[first], self.starts[last]
        offsets = self.starts[first:last] - a
        self.block_max[first:last] = np.maximum.reduceat(self.min_d2[a:b], offsets)
        if self.block_best is not self.block_max:
            self.block_best[first:last] = np.maximum.reduceat(self._score(a, b), offsets)

    def add_center(self, position: int) -> None:
        """Make stored row `position` a center: update every row it can bring closer."""
        center32 = self.rows[position].astype(np.float32)
        center = self.torch.from_numpy(self.rows[position].copy()) if self.storage == "float16" else center32
        center_sq = self.sq_norms[position]
        visited = self._visited_blocks(center32, center_sq)
        sizes = self.starts[visited + 1] - self.starts[visited]
        rows = int(sizes.sum())
        parts = min(self.workers, rows // _PARALLEL_MIN_ROWS) if self.storage == "float32" else 1
        if parts > 1:  # threads take equal shares of the visited rows, cut at block boundaries
            cuts = np.searchsorted(np.cumsum(sizes), np.arange(1, parts) * rows / parts)
            jobs = [
                self.pool.submit(self._update_blocks, share, center, center_sq)
                for share in np.split(visited, cuts)
                if len(share)
            ]
            for job in jobs:
                job.result()
        elif len(visited):
            self._update_blocks(visited, center, center_sq)
        self.stats["rows_updated"] += rows
        self.min_d2[position] = -1.0
        if self.excluded is not None:
            self.excluded[position] = True
        block = int(self.block_of[position])
        self._refresh(block, block + 1)
        self.stats["blocks_visited"] += len(visited)
        self.stats["blocks_skipped"] += len(self.block_max) - len(visited)

    def exclude(self, stored_rows: np.ndarray) -> None:
        """Stop picking the stored rows in the boolean mask (their distances keep updating)."""
        if self.excluded is None:
            self.excluded = self.min_d2 < 0  # centers so far
            if self.block_best is self.block_max:
                self.block_best = self.block_max.copy()
        self.excluded |= stored_rows
        self._refresh(0, len(self.block_max))

    def farthest(self) -> tuple[int, float]:
        """(stored position, squared distance) of the pickable row with the highest pick score
        (the farthest from the centers when there is no bonus); ties go to the lowest original
        index (rows inside a block are in original order)."""
        best = self.block_best.max()
        chosen = -1
        for block in np.flatnonzero(self.block_best == best):
            a, b = self.starts[block], self.starts[block + 1]
            position = a + int(np.argmax(self._score(a, b)))
            if chosen < 0 or self.order[position] < self.order[chosen]:
                chosen = position
        return chosen, float(self.min_d2[chosen])

    def radius_squared(self) -> float:
        """Largest squared min-distance over all rows (centers count as 0)."""
        return max(float(self.block_max.max()), 0.0)


class _CudaTraversal:
    """GPU state of a traversal: the same rules as `_BlockTraversal`, dense scan, original order."""

    def __init__(self, x: np.ndarray, scale: float, storage: str, bonus: np.ndarray | None = None):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' needs a CUDA GPU, but torch.cuda.is_available() is False")
        n, d = x.shape
        self.torch = torch
        self.order = np.arange(n, dtype=np.int64)
        dtype = torch.float16 if storage == "float16" else torch.float32
        self.rows = torch.empty((n, d), dtype=dtype, device="cuda")
        for start in range(0, n, _CHUNK_ROWS):
            rows = np.arange(start, min(n, start + _CHUNK_ROWS))
            self.rows[start : start + len(rows)] = torch.from_numpy(_scaled_rows(x, rows, scale)).to("cuda", dtype)
        stored = self.rows.float()
        self.sq_norms = (stored * stored).sum(dim=1)
        del stored
        self.min_d2 = torch.full((n,), float("inf"), device="cuda")
        self.bonus = None if bonus is None else torch.from_numpy(bonus / scale).float().to("cuda")
        self.excluded: object | None = None
        self.stats = {"blocks": 1, "blocks_visited": 0, "blocks_skipped": 0, "rows_updated": 0}

    def add_center(self, position: int) -> None:
        """Make row `position` a center (one dense mat-vec)."""
        d2 = self.sq_norms + self.sq_norms[position] - 2 * (self.rows @ self.rows[position]).float()
        self.torch.minimum(self.min_d2, d2, out=self.min_d2)
        self.min_d2[position] = -1.0
        if self.excluded is not None:
            self.excluded[position] = True
        self.stats["blocks_visited"] += 1
        self.stats["rows_updated"] += len(self.min_d2)

    def exclude(self, rows: np.ndarray) -> None:
        """Stop picking the rows in the boolean mask (their distances keep updating)."""
        mask = self.torch.from_numpy(rows).to("cuda")
        self.excluded = mask | (self.min_d2 < 0) if self.excluded is None else self.excluded | mask

    def farthest(self) -> tuple[int, float]:
        """(row, squared distance) of the pickable row with the highest pick score, lowest index on ties."""
        key = self.min_d2
        if self.bonus is not None:
            key = (key.clamp(min=0).sqrt() + self.bonus).masked_fill(key < -0.5, float("-inf"))
        if self.excluded is not None:
            key = key.masked_fill(self.excluded, float("-inf"))
        position = int(self.torch.argmax(key))
        return position, float(self.min_d2[position])

    def radius_squared(self) -> float:
        """Largest squared min-distance over all rows (centers count as 0)."""
        return max(float(self.min_d2.max()), 0.0)


def kcenter_greedy(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    initial: Sequence[int] = (),
    groups: np.ndarray | None = None,
    quotas: Mapping[Hashable, int] | None = None,
    bonus: np.ndarray | None = None,
    storage: str = "float32",
    block_size: int = DEFAULT_BLOCK_SIZE,
    prune: bool = True,
    device: str = "cpu",
) -> KCenterResult:
    """Pick `k` new centers from the rows of `x` by farthest-point traversal (L2 distance).

    Inputs: `x` (n, d) real rows (any float or int dtype; computed in float32 or float16);
    `k` new picks (0 <= k <= n − len(initial), and no more than the quotas allow); `seed` for the
    first pick when `initial` is empty (and for the k-means layout); `initial` rows already chosen
    (centers from the start, never returned); `groups` (n,) a label per row and `quotas`
    {label: max new picks} (labels not in `quotas` are unlimited); `bonus` (n,) finite values
    added to each row's distance when choosing (argmax of min-distance + bonus: the weighted
    rule; None = farthest-first); `storage` "float32" or
    "float16"; `block_size` rows per block (the k-means layout makes about n / block_size
    clusters); `prune` the triangle-inequality block skipping (needs the k-means layout; off: a
    full scan in original order); `device` "cpu" or "cuda" (dense scan; `prune` and `block_size`
    do not apply). Output: `KCenterResult`. Raises ValueError naming the bad input, RuntimeError
    for device="cuda" without a GPU. See the module docstring for ties, quotas and determinism.
    """
    began = time.perf_counter()
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}; got {storage!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
    problem = _validate(x, k, initial, groups, quotas, bonus)
    n = problem.x.shape[0]
    scale = _power_of_two_scale(problem.x)
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        if device == "cuda":
            traversal = _CudaTraversal(problem.x, scale, storage, problem.bonus)
        else:
            layout = _cluster_layout(problem.x, scale, block_size, seed) if prune else _plain_layout(n, block_size)
            traversal = _BlockTraversal(problem.x, scale, layout, storage, prune, pool, workers, problem.bonus)
        layout_seconds = time.perf_counter() - began
        picks, squared = _traverse(traversal, problem, seed)
    result_radius = math.sqrt(traversal.radius_squared()) * scale if len(picks) + len(problem.initial) else math.inf
    stats = dict(traversal.stats, seconds=time.perf_counter() - began, layout_seconds=layout_seconds)
    return KCenterResult(
        np.asarray(picks, dtype=np.int64),
        (np.sqrt(np.maximum(np.asarray(squared, dtype=np.float64), 0)) * scale).astype(np.float32),
        float(result_radius),
        stats,
    )


def _traverse(
    traversal: _BlockTraversal | _CudaTraversal, problem: _Problem, seed: int
) -> tuple[list[int], list[float]]:
    """Run the greedy loop: core set, seeded first pick, then farthest-first under the quotas.

    Returns (original indices in pick order, squared scaled distance of each pick).
    """
    n = problem.x.shape[0]
    position_of = np.empty(n, dtype=np.int64)
    position_of[traversal.order] = np.arange(n)
    quota_left = None if problem.quota_left is None else problem.quota_left.copy()
    stored_codes = None if problem.group_codes is None else problem.group_codes[traversal.order]
    if quota_left is not None and (quota_left == 0).any():
        traversal.exclude(quota_left[stored_codes] == 0)
    for row in problem.initial:
        traversal.add_center(int(position_of[row]))
    picks: list[int] = []
    squared: list[float] = []

    def take(row: int, distance2: float) -> None:
        picks.append(row)
        squared.append(distance2)
        traversal.add_center(int(position_of[row]))
        if quota_left is not None:
            code = problem.group_codes[row]
            quota_left[code] -= 1
            if quota_left[code] == 0:
                traversal.exclude(stored_codes == code)

    if problem.k and not len(problem.initial):
        rng = np.random.default_rng(seed)
        eligible = np.arange(n) if quota_left is None else np.flatnonzero(quota_left[problem.group_codes] > 0)
        take(int(eligible[rng.integers(len(eligible))]), math.inf)
    while len(picks) < problem.k:
        position, distance2 = traversal.farthest()
        take(int(traversal.order[position]), distance2)
    return picks, squared


def kcenter_reference(
    x: np.ndarray, k: int, *, seed: int = 0, initial: Sequence[int] = (), bonus: np.ndarray | None = None
) -> KCenterResult:
    """The straightforward k-center greedy, as common active-learning code does it.

    After each new center it calls `sklearn.metrics.pairwise_distances(x, new_centers)`, takes
    the row-wise minimum with the running min-distance vector and picks the argmax of min-distance
    (+ `bonus` when given: the weighted rule), lowest index on ties; centers are never re-picked.
    Same start rule as `kcenter_greedy` (seeded `rng.integers(n)` when `initial` is empty). Inputs
    and output as `kcenter_greedy` without groups; stats has `seconds` only.
    """
    from sklearn.metrics import pairwise_distances

    began = time.perf_counter()
    problem = _validate(x, k, initial, None, None, bonus)
    x = problem.x
    extra = np.zeros(len(x)) if problem.bonus is None else problem.bonus
    min_distance = np.full(len(x), np.inf)
    picks: list[int] = []
    found: list[float] = []

    def add(centers: np.ndarray) -> None:
        np.minimum(min_distance, pairwise_distances(x, x[centers]).min(axis=1), out=min_distance)
        min_distance[centers] = -1.0

    if len(problem.initial):
        add(problem.initial)
    elif problem.k:
        picks.append(int(np.random.default_rng(seed).integers(len(x))))
        found.append(math.inf)
        add(np.asarray(picks[-1:]))
    while len(picks) < problem.k:
        picks.append(int(np.argmax(np.where(min_distance < 0, -np.inf, min_distance + extra))))
        found.append(float(min_distance[picks[-1]]))
        add(np.asarray(picks[-1:]))
    radius = max(float(min_distance.max()), 0.0) if picks or len(problem.initial) else math.inf
    return KCenterResult(
        np.asarray(picks, dtype=np.int64),
        np.asarray(found, dtype=np.float32),
        radius,
        {"seconds": time.perf_counter() - began},
    )
