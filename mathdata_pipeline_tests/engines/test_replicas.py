"""Data-parallel replicas (the mechanism behind the `vllm` backend's one replica per GPU), here as
two llama.cpp worker processes on the CPU: the same results as one engine, spread over both, and
a replica killed mid-run costs nothing."""

from __future__ import annotations

import pytest

from mathdata_pipeline.engines.base import Completion, Request, SamplingParams
from mathdata_pipeline.engines.factory import build_engine, replica_layout, validate_profile
from mathdata_pipeline.engines.fingerprint import file_digest
from mathdata_pipeline.engines.local import LocalEngine, embedded_gguf_path
from mathdata_pipeline.engines.replicas import ReplicaEngine

pytestmark = pytest.mark.slow
PROFILE = {"backend": "local", "n_ctx": 512, "n_threads": 1, "replicas": 2}


def _requests(count: int) -> list[Request]:
    return [
        Request.chat([{"role": "user", "content": f"Name {i} fruits."}], SamplingParams(0.8, 0.95, 12, seed=i))
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def expected():
    with LocalEngine(n_ctx=512, n_threads=1) as engine:
        results = dict(engine.generate(_requests(8)))
        score = engine.score("Question: 2 + 2?\nAnswer:", " 4")
    return [results[i] for i in range(8)], score


def test_replicas_give_the_results_of_one_engine_and_survive_a_killed_replica(expected):
    results, score = expected
    engine = build_engine(PROFILE)
    try:
        assert isinstance(engine, ReplicaEngine) and engine.capacity == 2
        assert engine.info.backend == "local" and engine.info.revision == file_digest(embedded_gguf_path())
        assert engine.score_many([("Question: 2 + 2?\nAnswer:", " 4")] * 3) == [score] * 3
        stream = engine.stream()
        for index, request in enumerate(_requests(8)):
            stream.submit(index, request)
        got = dict([stream.next_result()])
        engine._replicas[0].process.kill()  # one replica dies with requests in hand
        while stream.pending:
            tag, result = stream.next_result()
            got[tag] = result
        assert sorted(got) == list(range(8))
        assert [got[i].text for i in range(8)] == [r.text for r in results]
        assert all(isinstance(r, Completion) for r in got.values())
        assert dict(engine.generate(_requests(2)))[1].text == results[1].text  # the survivor serves alone
    finally:
        engine.close()


def test_vllm_replicas_take_their_gpus_from_the_visible_ones(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    per_gpu = validate_profile("p", {"backend": "vllm", "model": "m", "replicas": 0})
    assert replica_layout(per_gpu) == (4, [{"CUDA_VISIBLE_DEVICES": d} for d in "2357"])
    pairs = validate_profile("p", {"backend": "vllm", "model": "m", "replicas": 0, "tensor_parallel_size": 2})
    assert replica_layout(pairs) == (2, [{"CUDA_VISIBLE_DEVICES": "2,3"}, {"CUDA_VISIBLE_DEVICES": "5,7"}])
    too_many = validate_profile("p", {"backend": "vllm", "model": "m", "replicas": 3, "tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="need more GPUs than the 4 visible"):
        replica_layout(too_many)
