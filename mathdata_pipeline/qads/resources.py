"""The k-center selector resource: k-center greedy on the CPU (numpy, blocked, optionally pruned) or the GPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
import numpy as np
from pydantic import Field

from mathdata_pipeline.qads.kcenter import KCenterResult, kcenter_greedy


class KCenterSelector(dg.ConfigurableResource):
    """Farthest-point (k-center greedy) selection over embeddings; see `qads/kcenter.py` and
    `benchmarks/kcenter.py` for why each kernel is used where."""

    device: str = Field(default="cpu", description="cpu or cuda")
    storage: str = Field(default="float32", description="float32 or float16 storage of the embedding matrix")
    prune: bool = Field(
        default=False,
        description="skip blocks that the triangle inequality rules out (off by "
        "default: the plain scan was faster on 2 CPU cores, benchmarks/RESULTS.md)",
    )

    def select(
        self,
        x: np.ndarray,
        k: int,
        *,
        seed: int,
        initial: Sequence[int] = (),
        groups: np.ndarray | None = None,
        quotas: Mapping[str, int] | None = None,
    ) -> KCenterResult:
        """k new centers from rows of `x` (see `methods.kcenter.kcenter_greedy`)."""
        return kcenter_greedy(
            x,
            k,
            seed=seed,
            initial=initial,
            groups=groups,
            quotas=quotas,
            storage=self.storage,
            prune=self.prune,
            device=self.device,
        )
