"""`ray_map` and the three heavy stages on a real local Ray cluster (a head and two worker nodes on
127.0.0.1, one cluster for the module): chunks come back as they finish, a worker lost mid-run
costs only its chunk, and gradient features, embeddings and log-probability scores computed on
Ray workers equal the local ones and land in the shards, the cache and the ledger."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from mathdata_pipeline.common.ray_map import RayCompute, RayMapError, RayPool
from mathdata_pipeline.common.resources import COMPUTE_ENV, ComputeConfig
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.evaluation.logprob import BatchScorer, score_many
from mathdata_pipeline.evaluation.ray_scoring import RayScorer
from mathdata_pipeline.influence.gradient_features import (
    Example,
    GradientFeaturizer,
    compute_feature_shards,
    load_features,
)
from mathdata_pipeline.influence.ray_features import RayFeaturizer
from mathdata_pipeline.qads.embeddings import EmbeddingCache, SentenceEmbedder, embed_with_cache
from mathdata_pipeline.qads.ray_embeddings import RayEmbedder
from mathdata_pipeline_tests.influence.conftest import build_tiny_causal_lm, gsm8k_rows
from mathdata_pipeline_tests.services import free_port, local_ray_cluster

FEATURES = {"proj_dim": 64, "max_length": 256, "max_batch_tokens": 1024, "device": "cpu", "dtype": "float32"}


def test_the_compute_option_defaults_to_local_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv(COMPUTE_ENV, raising=False)
    assert ComputeConfig().ray() is None
    monkeypatch.setenv(COMPUTE_ENV, "ray")
    assert ComputeConfig(workers=2).ray() == RayCompute(address="auto", workers=2)
    assert ComputeConfig(backend="local").ray() is None
    monkeypatch.setenv(COMPUTE_ENV, "spark")
    with pytest.raises(ValueError, match=f"{COMPUTE_ENV}='spark': must be one of local, ray"):
        ComputeConfig().ray()


def test_a_cluster_that_is_not_there_fails_at_once():
    import ray

    assert not ray.is_initialized()
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RayMapError, match=f"cannot reach the Ray cluster at '{address}'"):
        RayPool(dict, {}, RayCompute(address=address))


@pytest.fixture(scope="module")
def cluster():
    """Two one-CPU worker nodes; this process stays connected for the module (pools join it)."""
    import ray

    with local_ray_cluster(workers=2) as cluster:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        try:
            yield RayCompute(address=cluster.address)
        finally:
            ray.shutdown()


class Counter:
    """A worker's "model": its pid, and how many chunks it ran (built once per worker)."""

    def __init__(self, offset: int):
        self.offset, self.pid, self.chunks = offset, os.getpid(), 0


def _add(counter: Counter, chunk: list[int]) -> tuple[int, list[int]]:
    counter.chunks += 1
    if chunk == [-1]:
        raise ValueError("chunk [-1] is bad input")
    if chunk == [-2]:
        os.kill(os.getpid(), signal.SIGKILL)  # a fault injected on purpose: this chunk kills its worker
    return counter.pid, [x + counter.offset for x in chunk]


@pytest.mark.slow
def test_chunks_run_on_both_workers_built_once_each(cluster):
    chunks = [(i, [i, 10 * i]) for i in range(8)]
    with RayPool(Counter, {"offset": 1}, cluster) as pool:
        assert len(pool.workers) == 2 and len({w.node for w in pool.workers}) == 2  # one per worker node
        results = dict(pool.map(_add, chunks))
        assert {i: values for i, (_, values) in results.items()} == {i: [i + 1, 10 * i + 1] for i in range(8)}
        assert {pid for pid, _ in results.values()} == {w.pid for w in pool.workers}
        assert pool.call(lambda counter, _: counter.chunks) >= 1  # the model outlived its chunks
        with pytest.raises(ValueError, match=r"chunk \[-1\] is bad input"):
            list(pool.map(_add, [(0, [-1])]))  # an error of the function is raised as it is


@pytest.mark.slow
def test_a_chunk_that_kills_every_worker_fails_the_map_with_its_name(cluster):
    with RayPool(Counter, {"offset": 0}, RayCompute(address=cluster.address, max_attempts=2)) as pool:
        with pytest.raises(RayMapError, match="chunk 'poison' lost its Ray worker 2 times"):
            list(pool.map(_add, [("poison", [-2])]))
        assert not any(w.alive for w in pool.workers)
        with pytest.raises(RayMapError, match="every Ray worker building Counter has died"):
            pool.call(_add, [1])


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, data_root):
    rows = gsm8k_rows(data_root, 40)
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), [r["question"] + r["answer"] for r in rows])
    examples = [Example(f"gsm8k-{i}", f"Question: {r['question']}\nAnswer: ", r["answer"]) for i, r in enumerate(rows)]
    return folder, examples


def _kill_when(path, count: int, victim, killed: list[set[str]]) -> threading.Thread:
    """A thread that SIGKILLs the pool worker `victim` as soon as it has finished a chunk and
    `count` shards exist under `path`, noting those shards."""

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = {p.name for p in path.glob("shard-*.npz")}
            if len(done) >= count and set(victim.finished) - {"call"}:  # a shard, not the settings key
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(done)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_gradient_features_on_two_workers_survive_a_killed_worker(cluster, tiny_lm, tmp_path):
    folder, examples = tiny_lm
    local = GradientFeaturizer(str(folder), **FEATURES)
    compute_feature_shards(local, examples, tmp_path / "local", shard_size=2)
    with RayFeaturizer(cluster, str(folder), **FEATURES) as remote:
        assert remote.settings_key() == local.settings_key()
        killed: list[set[str]] = []
        watcher = _kill_when(tmp_path / "ray", 3, remote.pool.workers[0], killed)
        paths = compute_feature_shards(remote, examples, tmp_path / "ray", shard_size=2)
        watcher.join()
        assert killed, "the worker was never killed"
        assert not remote.pool.workers[0].alive and remote.pool.workers[1].alive
        sent = dict(remote.pool.sent)
        resent = {tag for tag, times in sent.items() if times > 1}
        assert len(resent) <= 1  # only the chunk the dead worker held was sent again ...
        assert not {paths[i].name for i in resent} & killed[0]  # ... never a shard finished before the kill
        assert all(set(w.finished) - {"call"} for w in remote.pool.workers)  # both workers computed shards
        stamps = {p.name: p.stat().st_mtime_ns for p in paths}
        compute_feature_shards(remote, examples, tmp_path / "ray", shard_size=2)  # the rerun reuses every shard
        assert remote.pool.sent == sent and {p.name: p.stat().st_mtime_ns for p in paths} == stamps
    local_ids, local_features = load_features(tmp_path / "local")
    ray_ids, ray_features = load_features(tmp_path / "ray")
    assert ray_ids == local_ids == [e.example_id for e in examples]
    np.testing.assert_allclose(ray_features, local_features, atol=1e-5)


@pytest.mark.slow
def test_embeddings_on_ray_workers_equal_the_local_ones_and_fill_the_cache(cluster, tmp_path):
    texts = [f"User: what is {i} + {i}?\n\nAssistant: {2 * i}" for i in range(24)]
    expected = SentenceEmbedder("embedded").embed(texts)
    with RayEmbedder(cluster, "sentence", model="embedded") as embedder:
        cache = EmbeddingCache(tmp_path / f"{embedder.model_key}.parquet")
        matrix, hits, misses = embed_with_cache(texts, embedder, cache)
        assert (hits, misses) == (0, 24)
        assert sum(len(w.finished) > 0 for w in embedder.pool.workers) == 2  # both workers embedded
        np.testing.assert_allclose(matrix, expected, atol=1e-5)
        assert len(cache.read()[0]) == 24
        again, hits, misses = embed_with_cache(texts, embedder, cache)
    assert (hits, misses) == (24, 0) and np.array_equal(again, matrix)


@pytest.mark.slow
def test_log_probability_scores_on_ray_workers_equal_the_local_ones_in_the_ledger(cluster, tiny_lm, tmp_path):
    folder, examples = tiny_lm
    pairs = [(e.prompt, e.response) for e in examples[:12]]
    local = BatchScorer(folder, model_id="tiny", max_tokens=160, batch_tokens=640)
    expected = local.score(pairs)
    assert 0 < sum(s is not None for s in expected) < len(pairs)  # some pairs are too long to score
    scorer = RayScorer(cluster, folder, model_id="tiny", max_tokens=160, batch_tokens=640)
    try:
        assert scorer.info == local.info and scorer.chat_prompt("2?") == local.chat_prompt("2?")
        with RequestLedger(tmp_path / "ledger.sqlite") as ledger:
            scores, stats = score_many(scorer, ledger, pairs, log=lambda _: None)
            assert stats.cache_hits == 0 and all(len(w.finished) > 0 for w in scorer.pool.workers)
            for score, want in zip(scores, expected, strict=True):
                assert (score is None) == (want is None)
                if want is not None:
                    assert score.tokens == want.tokens and score.logprob == pytest.approx(want.logprob, abs=1e-4)
            again, stats = score_many(local, ledger, pairs, log=lambda _: None)  # the local scorer: all stored
        assert stats.cache_hits == sum(s is not None for s in scores) and again == scores
    finally:
        scorer.close()
