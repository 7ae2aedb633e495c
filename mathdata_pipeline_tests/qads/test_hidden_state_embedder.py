"""HiddenStateEmbedder placement and batching: a tiny random Llama built in the test, batched by a
token budget (vectors do not depend on the budget), with the precision in the cache key."""

from __future__ import annotations

import numpy as np
import pytest

from mathdata_pipeline.qads.embeddings import HiddenStateEmbedder
from mathdata_pipeline_tests.common.tiny_models import save_tiny_causal_lm

TEXTS = [
    "What is 2 + 2?",
    "A train travels 240 km in 3 hours. At the same speed, how far does it travel in 5 hours?",
    "x",
    "Tom has 18 apples. He gives one third of them to Sara and eats 2. How many apples are left?",
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return str(save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_llama"), "llama"))


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_vectors_do_not_depend_on_the_token_budget(tiny_llama, pooling):
    roomy = HiddenStateEmbedder(tiny_llama, pooling=pooling, batch_tokens=4096, device="cpu").embed(TEXTS)
    tight = HiddenStateEmbedder(tiny_llama, pooling=pooling, batch_tokens=24, device="cpu").embed(TEXTS)
    one_row = HiddenStateEmbedder(tiny_llama, pooling=pooling, batch_size=1, device="cpu").embed(TEXTS)
    assert roomy.shape == (4, 64) and roomy.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(roomy, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tight, roomy, atol=1e-5)
    np.testing.assert_allclose(one_row, roomy, atol=1e-5)


def test_precision_is_part_of_the_cache_key(tiny_llama):
    float32 = HiddenStateEmbedder(tiny_llama, device="cpu")
    bfloat16 = HiddenStateEmbedder(tiny_llama, device="cpu", dtype="bfloat16")
    assert (float32.device, float32.dtype, bfloat16.dtype) == ("cpu", "float32", "bfloat16")
    assert float32.model_key != bfloat16.model_key
    assert "bfloat16" in bfloat16.model_key and "float32" not in float32.model_key  # old float32 keys stay valid
    vectors = bfloat16.embed(TEXTS[:2])
    np.testing.assert_allclose(vectors, float32.embed(TEXTS[:2]), atol=0.05)
    with pytest.raises(ValueError, match="batch_tokens"):
        HiddenStateEmbedder(tiny_llama, batch_tokens=0)


@pytest.mark.gpu
def test_hidden_states_on_cuda_match_the_cpu(tiny_llama):
    gpu = HiddenStateEmbedder(tiny_llama, device="cuda")
    assert gpu.dtype == "bfloat16"
    cpu = HiddenStateEmbedder(tiny_llama, device="cpu")
    cosines = (gpu.embed(TEXTS) * cpu.embed(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.99
