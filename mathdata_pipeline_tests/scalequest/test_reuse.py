"""Reuse of a trained question generator: its fingerprint follows base, questions, prefix, settings
and profiles; a recorded training is reused only with the same fingerprint and its model on disk."""

from __future__ import annotations

import json
from dataclasses import replace

from mathdata_pipeline.scalequest.generator import LATEST_FILE
from mathdata_pipeline.scalequest.prefix import PREFIX_PRESETS
from mathdata_pipeline.scalequest.reuse import (
    REUSE_FILE,
    forget_generator,
    generator_fingerprint,
    record_generator,
    reusable_generator,
)
from mathdata_pipeline.scalequest.training import QftConfig

BASE = {
    "base_identity": "embedded@abc",
    "questions": ["What is 2+2?", "What is 3*3?"],
    "prefix": PREFIX_PRESETS["qwen2-math"],
    "qft": QftConfig(max_steps=2),
    "qpo": None,
    "profiles": {},
}


def test_the_fingerprint_changes_with_every_input_and_only_then():
    key = generator_fingerprint(**BASE)
    assert generator_fingerprint(**BASE) == key
    changed = [
        {"base_identity": "embedded@abd"},
        {"questions": ["What is 2+2?"]},
        {"questions": ["What is 3*3?", "What is 2+2?"]},
        {"prefix": PREFIX_PRESETS["deepseekmath"]},
        {"qft": replace(BASE["qft"], max_steps=3)},
        {"qft": replace(BASE["qft"], learning_rate=1e-3)},
        {"profiles": {"optimizer": "openai-gpt4"}},
    ]
    keys = {generator_fingerprint(**(BASE | change)) for change in changed}
    assert key not in keys and len(keys) == len(changed)


def _trained(root, stage="qft"):
    (root / stage).mkdir(parents=True)
    (root / stage / "training.json").write_text("{}")
    (root / LATEST_FILE).write_text(json.dumps({"stage": stage}))


def test_a_recorded_generator_is_reused_only_with_its_fingerprint_and_its_model(tmp_path):
    root = tmp_path / "default"
    _trained(root, "qpo")
    assert reusable_generator(root, "k1") is None  # trained, never recorded (e.g. killed before the record)
    record_generator(root, "k1", {"qft_steps": 2, "latest": "qpo"})
    assert reusable_generator(root, "k1") == {"qft_steps": 2, "latest": "qpo"}
    assert reusable_generator(root, "k2") is None
    (root / "qpo" / "training.json").unlink()
    assert reusable_generator(root, "k1") is None  # the final stage is gone


def test_forgetting_before_a_training_means_a_killed_training_is_not_reused(tmp_path):
    root = tmp_path / "default"
    _trained(root)
    record_generator(root, "k1", {"latest": "qft"})
    forget_generator(root)
    assert not (root / REUSE_FILE).exists() and reusable_generator(root, "k1") is None
    forget_generator(root)  # nothing to forget: no error
