"""Device and precision choices shared by every torch stage, and batches by a token budget."""

from __future__ import annotations

import pytest
import torch

from mathdata_pipeline.common.batching import token_budget_batches
from mathdata_pipeline.common.devices import placement, resolve_device, resolve_dtype, resolve_dtype_name
from mathdata_pipeline.common.training import TrainingPrecision, row_tokens, training_precision

HAS_CUDA = torch.cuda.is_available()


def test_auto_resolves_to_the_machine():
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert placement() == (("cuda", "bfloat16") if HAS_CUDA else ("cpu", "float32"))
    assert resolve_dtype_name("auto", "cuda:1") == "bfloat16" and resolve_dtype_name("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16 and resolve_dtype("auto", "cpu") is torch.float32


def test_bad_names_and_a_missing_gpu_are_clear_errors():
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype_name("fp8", "cpu")
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_training_precision_on_the_cpu():
    assert training_precision("cpu") == TrainingPrecision("cpu", "float32", None)
    assert training_precision("cpu", "bfloat16") == TrainingPrecision("cpu", "bfloat16", None)


@pytest.mark.gpu
def test_training_precision_on_cuda():
    assert training_precision("cuda", "auto", use_lora=True) == TrainingPrecision("cuda", "bfloat16", "bf16")
    assert training_precision("cuda", "auto", use_lora=False) == TrainingPrecision("cuda", "float32", "bf16")
    assert training_precision("cuda", "bfloat16", use_lora=False) == TrainingPrecision("cuda", "bfloat16", "bf16")
    assert training_precision("cuda", "float16", use_lora=False) == TrainingPrecision("cuda", "float32", "fp16")
    assert training_precision("cuda", "float32") == TrainingPrecision("cuda", "float32", None)


def test_token_budget_batches_fit_the_budget_and_cover_every_row():
    lengths = [5, 300, 40, 41, 0, 1000, 39, 8, 8, 120]
    batches = token_budget_batches(lengths, 256)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * width <= 256  # an over-long row stands alone
    assert batches == [[5], [1], [9, 3], [2, 6, 7, 8, 0, 4]]  # longest first; 120 + 41 = 2 x 120 <= 256
    assert token_budget_batches(lengths, 256) == batches  # deterministic
    assert max(len(b) for b in token_budget_batches([1] * 50, 10_000, max_rows=7)) == 7
    assert token_budget_batches([], 10) == []
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches([1], 0)
    with pytest.raises(ValueError, match="row 1"):
        token_budget_batches([1, -2], 10)


def test_row_tokens_count_both_sequences_of_a_preference_pair():
    pair = {"prompt_ids": [1] * 10, "chosen_ids": [2] * 30, "rejected_ids": [3] * 5}
    assert row_tokens(pair, 1024) == 80
    assert row_tokens(pair, 20) == 40
    assert row_tokens({"input_ids": [1] * 300}, 256) == 256
