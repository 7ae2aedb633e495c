"""Gradient features computed by Ray workers (`common.ray_map`), for `compute_feature_shards`.

Each worker builds its own `GradientFeaturizer` from the same settings (on a GPU node when
`gpus_per_worker` asks for one) and switches checkpoints itself, since every chunk names the
checkpoint and gradient type it is for. The Dagster step keeps the shards: it asks a worker for the
settings key, skips the shards that are current, and writes each shard as its chunk comes back, so
a worker lost mid-run costs only the shard it was computing. Warm-up checkpoints must be on a path
every node can read (as the models of the `ray` engine backend).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mathdata_pipeline.common.ray_map import RayCompute, RayPool
from mathdata_pipeline.influence.gradient_features import Example, GradientFeaturizer

Checkpoint = tuple[str | None, str]  # (adapter folder or None, grad_type)


def _on_checkpoint(featurizer: GradientFeaturizer, checkpoint: Checkpoint) -> GradientFeaturizer:
    """`featurizer` switched to `checkpoint` unless it is there already (runs on a worker)."""
    adapter, grad_type = checkpoint
    current = str(featurizer.adapter_dir) if featurizer.adapter_dir is not None else None
    if (adapter is not None and adapter != current) or grad_type != featurizer.grad_type:
        featurizer.use_checkpoint(adapter, grad_type)
    return featurizer


def _settings_key(featurizer: GradientFeaturizer, checkpoint: Checkpoint) -> str:
    return _on_checkpoint(featurizer, checkpoint).settings_key()


def _features(featurizer: GradientFeaturizer, task: tuple[Checkpoint, list[Example]]) -> tuple[np.ndarray, np.ndarray]:
    checkpoint, examples = task
    return _on_checkpoint(featurizer, checkpoint).features_with_norms(examples)


class RayFeaturizer:
    """What `compute_feature_shards` needs of a featurizer (`use_checkpoint`, `settings_key`),
    with the features computed by a pool of Ray workers (`features_in_chunks`).

    Parameters: `compute` (the cluster and the workers' resources); then exactly the arguments of
    `GradientFeaturizer` (`model_source`, `adapter_dir`, keywords), with which every worker builds
    its own. Call `close` (or use as a context manager) to stop the workers.
    """

    def __init__(self, compute: RayCompute, model_source: str, adapter_dir: Path | str | None = None, **settings):
        adapter = str(adapter_dir) if adapter_dir is not None else None
        built = {"model_source": model_source, "adapter_dir": adapter, **settings}
        self.pool = RayPool(GradientFeaturizer, built, compute)
        self.checkpoint: Checkpoint = (adapter, settings.get("grad_type", "sgd"))
        self._keys: dict[Checkpoint, str] = {}

    def __enter__(self) -> RayFeaturizer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def use_checkpoint(self, adapter_dir: Path | str | None, grad_type: str = "sgd") -> None:
        """Compute the next features with checkpoint `adapter_dir` (None keeps the current one) and
        `grad_type` ("sgd" or "adam"); the workers switch when they get the next chunk."""
        if grad_type not in ("sgd", "adam"):
            raise ValueError(f"grad_type must be 'sgd' or 'adam', got {grad_type!r}")
        adapter = str(adapter_dir) if adapter_dir is not None else self.checkpoint[0]
        if grad_type == "adam" and adapter is None:
            raise ValueError("grad_type 'adam' needs adapter_dir with a warm-up optimizer state")
        self.checkpoint = (adapter, grad_type)

    def settings_key(self) -> str:
        """The workers' `GradientFeaturizer.settings_key` for the current checkpoint (asked once)."""
        if self.checkpoint not in self._keys:
            self._keys[self.checkpoint] = self.pool.call(_settings_key, self.checkpoint)
        return self._keys[self.checkpoint]

    def features_in_chunks(
        self, chunks: Sequence[tuple[int, Sequence[Example]]]
    ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        """`(index, (features, norms))` of each `(index, examples)` chunk, in completion order."""
        return self.pool.map(_features, [(index, (self.checkpoint, list(chunk))) for index, chunk in chunks])

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()
