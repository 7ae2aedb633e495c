"""The shared fine-tuning helpers on a tiny random Llama: a Trainer batched by a token budget, and
the settings any fine-tuning config (QFT, QPO, the evaluation's SFT) builds on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mathdata_pipeline.common.training import (
    TrainingSettings,
    batch_by_tokens,
    common_training_args,
    load_for_training,
    precision_of,
)
from mathdata_pipeline_tests.common.tiny_models import save_tiny_causal_lm


@dataclass(frozen=True)
class SftSettings(TrainingSettings):
    """The fields a fine-tuning config adds to TrainingSettings for `common_training_args`."""

    learning_rate: float = 1e-3
    max_steps: int = 1
    per_device_batch: int = 16
    grad_accum: int = 1
    scheduler: str = "constant"
    seed: int = 0
    batch_tokens: int = 96


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return str(save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_llama"), "llama"))


def test_trainer_batches_follow_the_token_budget(tiny_llama, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = SftSettings(use_lora=False, device="cpu")
    model, tokenizer = load_for_training(tiny_llama, config.use_lora, device=config.device)
    lengths = [3, 40, 5, 33, 12, 12, 60, 7, 25, 2, 18, 9]
    dataset = Dataset.from_dict({"input_ids": [[100 + n] * n for n in lengths]})
    args = SFTConfig(max_length=64, packing=False, **common_training_args(config, tmp_path))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    batches = batch_by_tokens(trainer, config)
    loader = list(trainer.get_train_dataloader())
    assert len(loader) == batches > 1
    seen = []
    for batch in loader:
        rows, width = batch["input_ids"].shape
        assert rows == 1 or rows * width <= config.batch_tokens
        seen += [int(row[0]) - 100 for row in batch["input_ids"]]
    assert sorted(seen) == sorted(lengths)  # every row once, none cut
    assert batch_by_tokens(trainer, SftSettings(batch_tokens=0)) == 0  # 0 keeps the Trainer's own batches


def test_precision_and_arguments_follow_the_config(tmp_path):
    config = SftSettings(device="cpu")
    args = common_training_args(config, tmp_path)
    assert args["use_cpu"] and not args["bf16"] and not args["fp16"]
    assert precision_of(config).weights == "float32"
    with pytest.raises(ValueError, match="device must be"):
        common_training_args(SftSettings(device="tpu"), tmp_path)
