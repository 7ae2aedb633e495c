"""The `ray` backend on a real local Ray cluster (a head and two worker nodes on 127.0.0.1), the
embedded llama.cpp model in each actor: an asset-sized batch goes through the request ledger
across both workers, one worker is SIGKILLed mid-run, the batch still finishes, and nothing that
finished before the kill is generated again."""

from __future__ import annotations

import os
import signal

import pytest

from mathdata_pipeline.engines.base import Completion, EngineUnavailable, Request, SamplingParams
from mathdata_pipeline.engines.factory import ProfileError, RayProfile, build_engine, validate_profile
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.ray_engine import RayEngine
from mathdata_pipeline.engines.runner import LedgerStream, run_requests
from mathdata_pipeline_tests.engines.servers import free_port
from mathdata_pipeline_tests.services import local_ray_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A Ray head without CPUs (so no actor lands on it) and two worker nodes of one CPU each;
    shut down (every Ray process stopped) at the end."""
    with local_ray_cluster(workers=2, cpus_per_worker=1) as cluster:
        yield cluster


def test_a_ray_profile_runs_one_engine_per_actor():
    profile = validate_profile("p", {"backend": "ray", "engine": {"backend": "vllm", "model": "m"}})
    assert isinstance(profile, RayProfile) and profile.address == "auto" and profile.replicas == 0
    with pytest.raises(ProfileError, match="engine.replicas must be 1"):
        validate_profile("p", {"backend": "ray", "engine": {"backend": "local", "replicas": 2}})
    with pytest.raises(ProfileError, match="engine.n_gpus: not a setting"):
        validate_profile("p", {"backend": "ray", "engine": {"backend": "local", "n_gpus": 1}})


def test_a_cluster_that_is_not_there_is_a_transient_fault_at_once():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable, match=f"cannot reach the Ray cluster at '{address}'"):
        build_engine({"backend": "ray", "address": address, "engine": {"backend": "local"}})


def _requests(count: int) -> list[Request]:
    return [
        Request.chat([{"role": "user", "content": f"Count to {i}."}], SamplingParams(0.8, 0.95, 16, seed=i))
        for i in range(count)
    ]


def test_a_batch_survives_a_killed_worker_and_regenerates_nothing(cluster, tmp_path):
    profile = {
        "backend": "ray",
        "address": cluster.address,
        "replicas": 0,  # one per worker node with CPUs: two
        "engine": {"backend": "local", "n_ctx": 512, "n_threads": 1},
    }
    engine = build_engine(profile)
    try:
        assert isinstance(engine, RayEngine) and len(engine.replicas) == 2
        assert len({r.node for r in engine.replicas}) == 2  # one actor on each worker node
        assert engine.info.backend == "local"  # ledger keys are those of the model, shared with `local`
        requests = _requests(16)
        with RequestLedger(tmp_path / "ledger.sqlite") as ledger:
            with LedgerStream(engine, ledger) as stream:
                for index, request in enumerate(requests):
                    stream.submit(index, request)
                done = dict(stream.next_result() for _ in range(4))
                finished_keys = {stream.key(requests[i]) for i in done}
                victim = max(engine.replicas, key=lambda r: r.load)
                held = set(victim.sent[victim.served :])  # what the victim holds at the kill
                assert held
                served_before_kill = victim.served
                os.kill(victim.pid, signal.SIGKILL)
                while stream.pending:
                    tag, result = stream.next_result()
                    done[tag] = result
                sent = stream._stream.sent
            assert sorted(done) == list(range(16))
            assert all(isinstance(r, Completion) and r.completion_tokens > 0 for r in done.values())
            assert len(ledger) == 16
            assert served_before_kill > 0 and all(r.served > 0 for r in engine.replicas)  # both workers served
            assert victim.served == served_before_kill and not victim.alive
            resent = {key for key, times in sent.items() if times > 1}
            assert resent <= held  # only what the dead worker held was sent again ...
            assert not resent & finished_keys  # ... never a request finished before the kill
            assert max(sent.values()) <= 2
            _, rerun = run_requests(engine, ledger, requests)  # the rerun is served by the ledger alone
            assert rerun.cache_hits == 16 and rerun.retries == 0
    finally:
        engine.close()
