"""The question-generator recipe's plain decisions: which GGUF export a serving backend needs
(decided before any training), named variants side by side, and the metadata of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathdata_pipeline.common.hf_models import model_config
from mathdata_pipeline.common.names import InvalidName
from mathdata_pipeline.common.training import TrainedModel
from mathdata_pipeline.scalequest.generator import (
    GeneratorRun,
    gguf_template_for,
    latest_stage,
    variant_dir,
)


@pytest.fixture(scope="module")
def smollm2_config() -> dict:
    return model_config("embedded")


def test_llama_cpp_needs_an_exportable_base(smollm2_config):
    assert gguf_template_for("local", "local-smollm2", smollm2_config, "embedded") == ("embedded", "")
    with pytest.raises(ValueError, match="architecture 'qwen2'.*name a vllm profile"):
        gguf_template_for("local", "local-smollm2", {**smollm2_config, "model_type": "qwen2"}, "embedded")
    with pytest.raises(ValueError, match="block_count is 30, the checkpoint has 28"):
        gguf_template_for("local", "local-smollm2", {**smollm2_config, "num_hidden_layers": 28}, "embedded")


def test_vllm_loads_hf_and_openai_cannot_serve(smollm2_config):
    template, why = gguf_template_for("vllm", "gpu-7b", {**smollm2_config, "model_type": "qwen2"}, "embedded")
    assert template == "" and why == "skipped: the generator is served by profile 'gpu-7b' (vllm), which loads hf/"
    with pytest.raises(ValueError, match="'openai-local' \\(openai\\) cannot serve"):
        gguf_template_for("openai", "openai-local", smollm2_config, "embedded")


def test_variants_live_side_by_side(tmp_path):
    for name, stage in (("qwen2-math", "qpo"), ("deepseek", "qft")):
        folder = variant_dir(tmp_path, name)
        folder.mkdir()
        (folder / "latest.json").write_text(json.dumps({"stage": stage}))
    assert latest_stage(variant_dir(tmp_path, "qwen2-math")) == tmp_path / "qwen2-math" / "qpo"
    assert latest_stage(variant_dir(tmp_path, "deepseek")) == tmp_path / "deepseek" / "qft"
    with pytest.raises(FileNotFoundError, match="variant 'other'"):
        latest_stage(variant_dir(tmp_path, "other"))
    for bad in ("../x", "A B", ""):
        with pytest.raises(InvalidName, match="generator variant"):
            variant_dir(tmp_path, bad)


def _model(kind: str, steps: int, rate: float) -> TrainedModel:
    return TrainedModel(
        hf_dir=Path("hf"),
        gguf_path=None,
        steps=steps,
        train_loss=[2.0, 1.23456],
        wall_seconds=3.21,
        config={"kind": kind, "learning_rate": rate},
        precision={"device": "cpu", "weights": "float32", "mixed": None},
    )


def test_run_metadata():
    qft_only = GeneratorRun(qft=_model("qft", 4, 2e-4))
    assert qft_only.metadata() == {
        "qft_steps": 4,
        "qft_final_loss": 1.2346,
        "qft_seconds": 3.2,
        "qft_learning_rate": 2e-4,
        "device": "cpu",
        "weights_dtype": "float32",
        "latest": "qft",
    }
    both = GeneratorRun(qft=_model("qft", 4, 2e-4), qpo=_model("qpo", 2, 5e-6), pairs=7, dropped={"unchanged": 1})
    meta = both.metadata()
    assert meta["latest"] == "qpo" and meta["qpo_pairs"] == 7 and meta["qpo_dropped/unchanged"] == 1
    assert meta["qpo_steps"] == 2 and meta["qpo_learning_rate"] == 5e-6
    skipped = GeneratorRun(qft=_model("qft", 4, 2e-4), skipped="0 preference pairs").metadata()
    assert skipped["qpo_pairs"] == 0 and skipped["latest"] == "qft"
