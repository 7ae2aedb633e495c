"""The FAISS k-center selector resource: k-center greedy (numpy running minimum on the CPU, torch on
the GPU) for the picks, FAISS for anchors (k-means) and coverage (flat-index search)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from mathdata_pipeline.qads.kcenter import KCenterResult, kcenter_greedy
from mathdata_pipeline.qads.neighbours import choose_anchors, coverage


class KCenterSelector(dg.ConfigurableResource):
    """Farthest-point (k-center greedy) selection over embeddings, and the FAISS queries around it;
    see `qads/kcenter.py`, `qads/neighbours.py` and `benchmarks/kcenter.py` for why each kernel
    is used where."""

    device: Literal["cpu", "cuda"] = Field(
        default="cpu", description="cpu, or cuda: k-center on torch CUDA, anchors and coverage on FAISS GPU"
    )
    storage: Literal["float32", "float16"] = Field(
        default="float32", description="float32 or float16 storage of the embedding matrix"
    )
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
        bonus: np.ndarray | None = None,
    ) -> KCenterResult:
        """k new centers from rows of `x` (see `qads.kcenter.kcenter_greedy`; `bonus` makes it the
        weighted rule)."""
        return kcenter_greedy(
            x,
            k,
            seed=seed,
            initial=initial,
            groups=groups,
            quotas=quotas,
            bonus=bonus,
            storage=self.storage,
            prune=self.prune,
            device=self.device,
        )

    def anchors(self, x: np.ndarray, m: int, method: str = "kmeans", seed: int = 0) -> np.ndarray:
        """Sorted row indices of `m` anchors among the rows of `x` (`qads.neighbours.choose_anchors`)."""
        return choose_anchors(x, m=m, method=method, seed=seed, device=self.device)

    def coverage(self, x: np.ndarray, selected: np.ndarray) -> dict[str, float]:
        """Distances from every row of `x` to its nearest selected row, summarised
        (`qads.neighbours.coverage`)."""
        return coverage(x, selected, device=self.device)
