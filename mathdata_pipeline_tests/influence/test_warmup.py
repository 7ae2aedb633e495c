"""LESS's warm-up: one checkpoint per epoch with its name-keyed Adam state and mean learning rate,
checkpoint weights, and a resume from the last finished epoch that gives the uninterrupted run's
checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mathdata_pipeline.influence.gradient_features import OPTIMIZER_STATE_FILE, Example
from mathdata_pipeline.influence.warmup import (
    CHECKPOINT_INFO_FILE,
    Checkpoint,
    checkpoint_weights,
    linear_schedule,
    warmup_lora,
)
from mathdata_pipeline_tests.influence.conftest import gsm8k_rows

SETTINGS = dict(epochs=2, batch_size=2, lr=1e-2, r=4, alpha=16, max_length=128, max_batch_tokens=256, seed=3)


@pytest.fixture(scope="module")
def examples(data_root) -> list[Example]:
    rows = sorted(gsm8k_rows(data_root, 30), key=lambda r: len(r["question"] + r["answer"]))[:5]
    return [Example(f"w{i}", f"Question: {r['question']}\nAnswer: ", r["answer"]) for i, r in enumerate(rows)]


def test_linear_schedule_and_checkpoint_weights():
    # 40 steps: warm-up ceil(1.2) = 2 steps (0, lr/2), then linear decay from lr at step 2 to 0.
    assert [linear_schedule(s, 40, 1.0) for s in (0, 1, 2, 21, 40)] == [0.0, 0.5, 1.0, pytest.approx(0.5), 0.0]
    ckpts = [Checkpoint(None, 1, 3, 3e-5), Checkpoint(None, 2, 6, 1e-5)]
    assert checkpoint_weights(ckpts) == pytest.approx([0.75, 0.25])
    assert checkpoint_weights([Checkpoint(None, 1, 1, 0.0)]) == [1.0]


def test_checkpoints_per_epoch_and_exact_resume(tiny_lm, examples, tmp_path):
    full = warmup_lora(str(tiny_lm), examples, tmp_path / "full", **SETTINGS)
    # 5 examples in batches of 2 = 3 steps per epoch, 6 in all; warm-up 1 step, then decay over 5.
    rates = [0.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    assert [(c.epoch, c.step) for c in full] == [(1, 3), (2, 6)]
    assert [c.mean_lr for c in full] == pytest.approx([1e-2 * sum(rates[:3]) / 3, 1e-2 * sum(rates[3:]) / 3])
    state = torch.load(full[1].path / OPTIMIZER_STATE_FILE, weights_only=True)
    assert all(".lora_A." in n or ".lora_B." in n for n in state) and len(state) == 2 * 4 * 2  # 2 layers x q/k/v/o
    assert {int(s["step"]) for s in state.values()} == {6}
    first, last = (load_file(str(c.path / "adapter_model.safetensors")) for c in full)
    assert any(not torch.equal(first[k], last[k]) for k in first), "the second epoch moved the adapter"

    # A run killed after epoch 1 leaves checkpoint-1 only; the rerun trains epoch 2 from it.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(full[0].path, resumed_dir / "checkpoint-1")
    resumed = warmup_lora(str(tiny_lm), examples, resumed_dir, **SETTINGS)
    assert [c.mean_lr for c in resumed] == pytest.approx([c.mean_lr for c in full])
    again = load_file(str(resumed[1].path / "adapter_model.safetensors"))
    for key in last:
        torch.testing.assert_close(again[key], last[key], rtol=1e-5, atol=1e-7)

    # Finished checkpoints of the same settings are reused; other settings retrain.
    stamp = (resumed_dir / "checkpoint-2" / CHECKPOINT_INFO_FILE).stat().st_mtime_ns
    warmup_lora(str(tiny_lm), examples, resumed_dir, **SETTINGS)
    assert (resumed_dir / "checkpoint-2" / CHECKPOINT_INFO_FILE).stat().st_mtime_ns == stamp
    other = warmup_lora(str(tiny_lm), examples, resumed_dir, **{**SETTINGS, "lr": 2e-2})
    assert json.loads((other[0].path / CHECKPOINT_INFO_FILE).read_text())["settings"]["lr"] == 2e-2


def test_bad_warmup_arguments(tiny_lm, tmp_path):
    with pytest.raises(ValueError, match="at least one example"):
        warmup_lora(str(tiny_lm), [], tmp_path, epochs=1)
