"""The size of the `gpu` concurrency pool: one GPU step per GPU (or per group of GPUs a step
uses) at a time. The GPUs are `MATHDATA_GPUS` when set (a cluster's count, given to a daemon that
sees none itself), else those `nvidia-smi -L` lists on this host.

    python -m mathdata_pipeline.common.gpu_pool [--gpus-per-step N]   # prints the limit
    dagster instance concurrency set gpu "$(python -m mathdata_pipeline.common.gpu_pool)"

With the `ray` engine backend one step already spreads over every GPU of the Ray cluster, so a
pool of 1 (what no GPU on the Dagster host gives) is the right size there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess


def count_gpus(listing: str) -> int:
    """GPUs in the output of `nvidia-smi -L` (one `GPU <index>: <name> (UUID: …)` line each;
    MIG instances listed under a GPU are not counted again)."""
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def listed_gpus() -> int:
    """GPUs `nvidia-smi -L` lists on this host; 0 when nvidia-smi is missing or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return 0
    try:
        done = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return count_gpus(done.stdout)


def gpu_pool_limit(gpus: int, gpus_per_step: int = 1) -> int:
    """Steps that may hold the `gpu` pool at once: `gpus // gpus_per_step`, at least 1 (a host
    without GPUs still runs its CPU engine steps one at a time). Raises ValueError for
    `gpus_per_step` < 1 or `gpus` < 0."""
    if gpus_per_step < 1 or gpus < 0:
        raise ValueError(f"gpus must be >= 0 and gpus_per_step >= 1, got {gpus} and {gpus_per_step}")
    return max(1, gpus // gpus_per_step)


def main() -> None:
    """Print the pool limit for this host (or `MATHDATA_GPUS`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus-per-step", type=int, default=1, help="GPUs one step uses (tensor parallel size)")
    args = parser.parse_args()
    configured = os.environ.get("MATHDATA_GPUS", "").strip()
    gpus = int(configured) if configured else listed_gpus()
    print(gpu_pool_limit(gpus, args.gpus_per_step))


if __name__ == "__main__":
    main()
