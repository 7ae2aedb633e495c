"""Fine-tuning on a tiny llama built from a config: the same settings give the same weights, a run
killed after a checkpoint resumes to the weights of an uninterrupted one, a model with the same
fingerprint is reused, and the base model is exported in the trained models' layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from mathdata_pipeline.evaluation.sft import SftSettings, export_reference, train_sft

ROWS = [
    (
        f"row-{i}",
        [
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"{i} + {i} = {2 * i}.\n#### {2 * i}"},
        ],
    )
    for i in range(10)
]


@pytest.fixture
def settings(tiny_llama) -> SftSettings:
    return SftSettings(
        base=str(tiny_llama),
        use_lora=True,
        max_steps=4,
        per_device_batch=2,
        grad_accum=1,
        max_length=64,
        learning_rate=0.01,
        checkpoint_steps=2,
        gguf_template="",
    )


class FaultAfterStep(TrainerCallback):
    """A fault injected on purpose: kills training at the end of `step` (after its checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"injected fault after step {self.step}")


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(run.model.hf_dir / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_same_settings_and_rows_give_the_same_model(settings, tmp_path, tiny_llama):
    first = train_sft(ROWS, tmp_path / "a", settings)
    second = train_sft(ROWS, tmp_path / "b", settings)
    assert first.model.config["fingerprint"] == second.model.config["fingerprint"]
    assert first.model.steps == 4 and len(first.model.train_loss) == 4
    assert _same(_weights(first), _weights(second))
    untrained = load_file(tiny_llama / "model.safetensors")
    assert not _same(_weights(first), untrained)  # training changed the (merged) weights
    other = train_sft(ROWS, tmp_path / "c", dataclasses.replace(settings, seed=1))
    assert other.model.config["fingerprint"] != first.model.config["fingerprint"]
    assert not _same(_weights(first), _weights(other))
    assert first.model.config["tokens_trained"] > 0 and first.model.config["loss_tokens"] > 0
    assert first.model.gguf_path is None and first.model.config["gguf_skipped"] == "no gguf_template set"


def test_a_killed_run_resumes_from_its_last_checkpoint(settings, tmp_path):
    with pytest.raises(RuntimeError, match="injected fault after step 3"):
        train_sft(ROWS, tmp_path / "model", settings, callbacks=[FaultAfterStep(3)])
    assert not (tmp_path / "model").exists()
    assert (tmp_path / ".model.partial" / "trainer" / "checkpoint-2").is_dir()
    resumed = train_sft(ROWS, tmp_path / "model", settings)
    assert resumed.resumed_from == 2 and resumed.model.steps == 4 and len(resumed.model.train_loss) == 4
    uninterrupted = train_sft(ROWS, tmp_path / "reference", settings)
    assert _same(_weights(resumed), _weights(uninterrupted))
    assert not (tmp_path / ".model.partial").exists()


def test_a_model_with_the_same_fingerprint_is_reused_and_its_record_updated(settings, tmp_path):
    trained = train_sft(ROWS, tmp_path / "model", settings, record={"benchmarks": ["gsm8k_test"]})
    again = train_sft(ROWS, tmp_path / "model", settings, record={"benchmarks": ["math500"]})
    assert again.reused and not trained.reused and again.counts == trained.counts
    assert again.model.config["benchmarks"] == ["math500"]
    assert again.model.config["fingerprint"] == trained.model.config["fingerprint"]
    changed = train_sft(ROWS[:6], tmp_path / "model", settings)
    assert not changed.reused and changed.model.config["examples"] == 6


def test_the_base_model_is_exported_once_in_the_layout_of_a_trained_one(tiny_llama, tmp_path, settings):
    reference = export_reference(str(tiny_llama), tmp_path / "base", settings)
    assert reference.steps == 0 and reference.config["kind"] == "base" and reference.gguf_path is None
    assert _same(load_file(reference.hf_dir / "model.safetensors"), load_file(tiny_llama / "model.safetensors"))
    stamp = (reference.hf_dir / "model.safetensors").stat().st_mtime_ns
    export_reference(str(tiny_llama), tmp_path / "base", settings)
    assert (reference.hf_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not written again
