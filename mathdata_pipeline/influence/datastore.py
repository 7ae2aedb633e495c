"""The gradient-feature datastore of one influence run (METHODS.md §5.5 steps 1-3): the warm-up on
a random share of the training rows, then, for every warm-up checkpoint, Adam-preconditioned
features of the training rows and SGD features of the validation responses, in resumable shards.

Layout under `root`: `warmup/checkpoint-<i>/` (adapter and name-keyed Adam state, `warmup.py`),
`checkpoint-<i>/train/` and `checkpoint-<i>/val/` (shards, `gradient_features.py`), and
`checkpoints.json`, written last: [{name, epoch, mean_lr, weight, grad_type_train}] with LESS's
weights (mean learning rates renormalised to sum 1). Without a warm-up (`warmup_epochs` 0) there
is one pseudo-checkpoint `fresh` of weight 1 with SGD features of a fresh adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mathdata_pipeline.common.hf_models import EMBEDDED
from mathdata_pipeline.common.ray_map import RayCompute
from mathdata_pipeline.influence.gradient_features import (
    Example,
    GradientFeaturizer,
    compute_feature_shards,
    load_features,
    write_atomically,
)
from mathdata_pipeline.influence.ray_features import RayFeaturizer
from mathdata_pipeline.influence.warmup import checkpoint_weights, warmup_lora

CHECKPOINTS_FILE = "checkpoints.json"


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed (METHODS.md §5.5). Model: `model` (transformers source), `device`,
    `dtype`; LoRA: `lora_r`, `lora_alpha`, `lora_dropout` (CPU-sized 8 and 32 by default, LESS's
    alpha/r of 4; LESS: 128, 512, 0.1); warm-up: `warmup_epochs` (one checkpoint per epoch; 0 = no
    warm-up), `warmup_fraction` of the training rows (chosen by the caller), `warmup_batch_size`
    examples per step, `warmup_lr`; features: `proj_dim`, `proj_seed`, `max_length`, `shard_size`
    (examples per resumable shard), `max_batch_tokens` (token budget of one forward/backward
    pass); `seed` for the warm-up run and the adapter initialisation."""

    model: str = EMBEDDED
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    proj_dim: int = 8192
    proj_seed: int = 0
    max_length: int = 2048
    shard_size: int = 16
    max_batch_tokens: int = 4096
    warmup_epochs: int = 4
    warmup_fraction: float = 0.05
    warmup_batch_size: int = 32
    warmup_lr: float = 2e-5
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"


@dataclass(frozen=True)
class CheckpointFeatures:
    """The features of one checkpoint: its name and weight, training ids and (n, k) features,
    validation ids and (m, k) features."""

    name: str
    weight: float
    train_ids: list[str]
    train: np.ndarray
    val_ids: list[str]
    val: np.ndarray


def compute_checkpoint_features(
    train: Sequence[Example],
    val: Sequence[Example],
    root: Path,
    settings: FeatureSettings,
    warmup: Sequence[Example] = (),
    *,
    compute: RayCompute | None = None,
) -> dict[str, int | str]:
    """Warm up on the `warmup` examples (LESS: a random 5% of the training rows; ignored when
    `warmup_epochs` is 0), then write the features of `train` and `val` for every checkpoint
    under `root` (see module doc). With `compute` the features (not the warm-up) are computed by
    Ray workers (`ray_features.RayFeaturizer`), the shards still written here as they finish.
    Output: counts (checkpoints, warm-up examples, examples and shards per split) and
    `grad_type_train` ("adam" after a warm-up, else "sgd")."""
    root = Path(root)
    (root / CHECKPOINTS_FILE).unlink(missing_ok=True)  # a killed run must not leave the old listing
    featurizer_settings = dict(
        proj_dim=settings.proj_dim,
        proj_seed=settings.proj_seed,
        max_length=settings.max_length,
        max_batch_tokens=settings.max_batch_tokens,
        init_seed=settings.seed,
        device=settings.device,
        dtype=settings.dtype,
    )
    if settings.warmup_epochs:
        checkpoints = warmup_lora(
            settings.model,
            warmup,
            root / "warmup",
            epochs=settings.warmup_epochs,
            batch_size=settings.warmup_batch_size,
            lr=settings.warmup_lr,
            r=settings.lora_r,
            alpha=settings.lora_alpha,
            dropout=settings.lora_dropout,
            max_length=settings.max_length,
            max_batch_tokens=settings.max_batch_tokens,
            seed=settings.seed,
            device=settings.device,
            dtype=settings.dtype,
        )
        weights = checkpoint_weights(checkpoints)
        runs = [(f"checkpoint-{c.epoch}", c.path, c.mean_lr, w) for c, w in zip(checkpoints, weights)]
        featurizer_args = (settings.model, checkpoints[0].path)
        grad_type, warmed = "adam", len(warmup)
    else:
        featurizer_args = (settings.model, None)
        featurizer_settings.update(r=settings.lora_r, alpha=settings.lora_alpha)
        runs, grad_type, warmed = [("fresh", None, 0.0, 1.0)], "sgd", 0
    if compute is None:
        featurizer = GradientFeaturizer(*featurizer_args, **featurizer_settings)
    else:
        featurizer = RayFeaturizer(compute, *featurizer_args, **featurizer_settings)
    listing = []
    try:
        for name, adapter, mean_lr, weight in runs:
            for split, examples, kind in (("train", train, grad_type), ("val", val, "sgd")):
                featurizer.use_checkpoint(adapter, kind)
                compute_feature_shards(featurizer, examples, root / name / split, shard_size=settings.shard_size)
            listing.append({"name": name, "mean_lr": mean_lr, "weight": weight, "grad_type_train": grad_type})
    finally:
        if compute is not None:
            featurizer.close()
    write_atomically(root / CHECKPOINTS_FILE, lambda f: f.write(json.dumps(listing, indent=2).encode()))
    return {
        "checkpoints": len(runs),
        "warmup_examples": warmed,
        "train_examples": len(train),
        "val_examples": len(val),
        "grad_type_train": grad_type,
    }


def load_checkpoint_features(root: Path | str) -> list[CheckpointFeatures]:
    """The features of every checkpoint listed in `root/checkpoints.json`, in order. Raises
    ValueError when the listing is missing (an unfinished run) or a shard is missing."""
    listing_path = Path(root) / CHECKPOINTS_FILE
    if not listing_path.is_file():
        raise ValueError(f"{listing_path}: missing; materialize gradient_features to finish the run")
    out = []
    for entry in json.loads(listing_path.read_text()):
        train_ids, train = load_features(Path(root) / entry["name"] / "train")
        val_ids, val = load_features(Path(root) / entry["name"] / "val")
        if out and (train_ids, val_ids) != (out[0].train_ids, out[0].val_ids):
            raise ValueError(f"{root}/{entry['name']}: other examples than {out[0].name}")
        out.append(CheckpointFeatures(entry["name"], float(entry["weight"]), train_ids, train, val_ids, val))
    return out
