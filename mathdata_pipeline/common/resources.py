"""Run config shared by the heavy stages: where their model work runs (`compute` on the configs of
`gradient_features`, `embeddings` and `benchmark_scores`)."""

from __future__ import annotations

import os
from typing import Literal

import dagster as dg
from pydantic import Field

from mathdata_pipeline.common.ray_map import RayCompute

COMPUTE_ENV = "MATHDATA_COMPUTE"
BACKENDS = ("local", "ray")


class ComputeConfig(dg.Config):
    """Where a heavy stage runs its model: `local` (in the step's own process, as always) or `ray`
    (chunks of the work on the workers of a Ray cluster; the step keeps the shards, caches and
    ledgers; README "Scale out")."""

    backend: Literal["", "local", "ray"] = Field(
        default="", description=f"local or ray; empty = ${COMPUTE_ENV} or local"
    )
    ray_address: str = Field(
        default="auto", description="Ray cluster: auto ($RAY_ADDRESS or this machine's), host:6379 or ray://host:10001"
    )
    workers: int = Field(default=0, ge=0, description="Ray workers; 0 = one per GPU share, or one per CPU node")
    gpus_per_worker: float = Field(default=0.0, ge=0.0, le=8.0, description="GPUs each Ray worker reserves")
    cpus_per_worker: float = Field(default=1.0, gt=0.0, le=256.0, description="CPUs each Ray worker reserves")
    max_attempts: int = Field(default=3, ge=1, le=10, description="workers one chunk may lose before the step fails")

    def ray(self) -> RayCompute | None:
        """The Ray settings when the backend (or ${COMPUTE_ENV}) is `ray`; None for `local`.
        Raises ValueError when ${COMPUTE_ENV} holds anything else."""
        backend = self.backend or os.environ.get(COMPUTE_ENV) or "local"
        if backend not in BACKENDS:
            raise ValueError(f"{COMPUTE_ENV}={backend!r}: must be one of {', '.join(BACKENDS)}")
        if backend == "local":
            return None
        return RayCompute(
            address=self.ray_address,
            workers=self.workers,
            gpus_per_worker=self.gpus_per_worker,
            cpus_per_worker=self.cpus_per_worker,
            max_attempts=self.max_attempts,
        )
