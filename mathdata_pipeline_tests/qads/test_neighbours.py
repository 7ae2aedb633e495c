"""The FAISS side of the selector: k-means anchors, nearest-selected distances and coverage
against exact numpy distances, and the GPU index where there is one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mathdata_pipeline.qads.neighbours import choose_anchors, coverage, nearest_distances
from mathdata_pipeline.qads.resources import KCenterSelector


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 16)) * 10
    return (centers[np.repeat(np.arange(5), 40)] + rng.normal(size=(200, 16))).astype(np.float32)


def test_kmeans_anchors_are_distinct_one_per_cluster_and_deterministic():
    x = _blobs()
    anchors = choose_anchors(x, m=5, method="kmeans", seed=3)
    assert len(set(anchors.tolist())) == 5 and sorted(anchors.tolist()) == anchors.tolist()
    assert sorted(set((anchors // 40).tolist())) == [0, 1, 2, 3, 4]  # one nearest row per well-separated cluster
    np.testing.assert_array_equal(anchors, choose_anchors(x, m=5, method="kmeans", seed=3))
    many = choose_anchors(x, m=150, method="kmeans", seed=0)
    assert len(np.unique(many)) == 150
    assert choose_anchors(x[:7], m=100).tolist() == list(range(7))  # m is capped at n
    sample = choose_anchors(x, m=20, method="random", seed=1)
    assert len(np.unique(sample)) == 20 and sample.max() < 200
    np.testing.assert_array_equal(sample, choose_anchors(x, m=20, method="random", seed=1))
    with pytest.raises(ValueError, match="method"):
        choose_anchors(x, m=3, method="dbscan")


def _exact_nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :].astype(np.float64) - centers[None].astype(np.float64)) ** 2).sum(axis=2)).min(axis=1)


def test_nearest_distances_and_coverage_match_exact_distances():
    x = _blobs(1)
    selected = np.zeros(len(x), dtype=bool)
    selected[[3, 50, 120]] = True
    distances = nearest_distances(x, x[selected])
    np.testing.assert_allclose(distances, _exact_nearest(x, x[selected]), rtol=1e-4, atol=1e-3)
    assert (distances[selected] < 1e-2).all()
    summary = coverage(x, selected)
    assert summary["radius"] == pytest.approx(distances.max(), rel=1e-6)
    assert summary["mean"] == pytest.approx(distances.mean(), rel=1e-6)
    assert summary["p50"] <= summary["p90"] <= summary["radius"]
    assert np.isinf(nearest_distances(x, x[:0])).all()
    # the selector's k-center picks cover the blobs better than three arbitrary rows
    selector = KCenterSelector()
    picks = selector.select(x, 3, seed=0).indices
    spread = np.zeros(len(x), dtype=bool)
    spread[picks] = True
    clumped = np.zeros(len(x), dtype=bool)
    clumped[[0, 1, 2]] = True
    assert selector.coverage(x, spread)["radius"] < selector.coverage(x, clumped)["radius"]


def test_selector_anchors_and_bad_devices():
    x = _blobs(2)
    np.testing.assert_array_equal(KCenterSelector().anchors(x, 5, seed=3), choose_anchors(x, m=5, seed=3))
    with pytest.raises(ValueError, match="device"):
        nearest_distances(x, x[:2], device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where there is no GPU")
def test_faiss_on_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="GPU build of FAISS"):
        nearest_distances(_blobs(0), _blobs(0)[:2], device="cuda")


@pytest.mark.gpu
def test_gpu_index_matches_the_cpu():
    x = _blobs(3)
    selected = np.zeros(len(x), dtype=bool)
    selected[::17] = True
    cpu, gpu = coverage(x, selected), coverage(x, selected, device="cuda")
    assert gpu["radius"] == pytest.approx(cpu["radius"], rel=1e-4)
    np.testing.assert_array_equal(
        choose_anchors(x, m=5, seed=3, device="cuda").shape, choose_anchors(x, m=5, seed=3).shape
    )
