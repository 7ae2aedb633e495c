"""The feature datastore: warm-up checkpoints, Adam training features and SGD validation features
per checkpoint, the checkpoint listing with LESS's weights, a rerun that recomputes nothing, and
the fresh-adapter path without a warm-up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mathdata_pipeline.influence.datastore import (
    CHECKPOINTS_FILE,
    FeatureSettings,
    compute_checkpoint_features,
    load_checkpoint_features,
)
from mathdata_pipeline.influence.gradient_features import Example, GradientFeaturizer
from mathdata_pipeline_tests.influence.conftest import gsm8k_rows


@pytest.fixture(scope="module")
def split(data_root) -> tuple[list[Example], list[Example]]:
    rows = sorted(gsm8k_rows(data_root, 30), key=lambda r: len(r["question"] + r["answer"]))[:7]
    examples = [Example(f"d{i}", f"Question: {r['question']}\nAnswer: ", r["answer"]) for i, r in enumerate(rows)]
    return examples[:5], examples[5:]


def settings(tiny_lm, **changes) -> FeatureSettings:
    base = dict(
        model=str(tiny_lm),
        lora_r=4,
        lora_alpha=16,
        proj_dim=256,
        max_length=128,
        shard_size=2,
        warmup_epochs=2,
        warmup_batch_size=2,
        warmup_lr=1e-2,
        device="cpu",
    )
    return FeatureSettings(**{**base, **changes})


def test_features_per_checkpoint_with_learning_rate_weights(tiny_lm, split, tmp_path):
    train, val = split
    report = compute_checkpoint_features(train, val, tmp_path, settings(tiny_lm), warmup=train[:3])
    assert report == {
        "checkpoints": 2,
        "warmup_examples": 3,
        "train_examples": 5,
        "val_examples": 2,
        "grad_type_train": "adam",
    }
    listing = json.loads((tmp_path / CHECKPOINTS_FILE).read_text())
    rates = [json.loads((tmp_path / "warmup" / e["name"] / "checkpoint.json").read_text())["mean_lr"] for e in listing]
    assert [e["weight"] for e in listing] == pytest.approx([r / sum(rates) for r in rates])
    first, second = load_checkpoint_features(tmp_path)
    assert (first.name, second.name) == ("checkpoint-1", "checkpoint-2")
    assert first.train_ids == [e.example_id for e in train] and first.val_ids == [e.example_id for e in val]
    assert not np.allclose(first.train, second.train), "each checkpoint has its own features"

    # The validation side is plain SGD at the checkpoint, the training side Adam-preconditioned.
    featurizer = GradientFeaturizer(str(tiny_lm), tmp_path / "warmup" / "checkpoint-2", proj_dim=256, max_length=128)
    np.testing.assert_allclose(second.val, featurizer.features(val), atol=1e-5)
    featurizer.use_checkpoint(None, "adam")
    np.testing.assert_allclose(second.train, featurizer.features(train), atol=1e-5)

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("shard-*.npz")}
    compute_checkpoint_features(train, val, tmp_path, settings(tiny_lm), warmup=train[:3])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("shard-*.npz")} == stamps, "a rerun recomputes nothing"


def test_without_warmup_one_fresh_checkpoint_of_sgd_features(tiny_lm, split, tmp_path):
    train, val = split
    report = compute_checkpoint_features(train, val, tmp_path, settings(tiny_lm, warmup_epochs=0))
    assert report["grad_type_train"] == "sgd" and report["checkpoints"] == 1
    (only,) = load_checkpoint_features(tmp_path)
    assert (only.name, only.weight) == ("fresh", 1.0)
    with pytest.raises(ValueError, match="checkpoints.json: missing"):
        load_checkpoint_features(tmp_path / "nothing")
