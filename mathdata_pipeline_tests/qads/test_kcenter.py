"""k-center greedy: exactness against the sklearn reference, invariance to blocks/pruning, float16
error bound, quotas, core sets, pruning on clustered data, bad input, and the CUDA path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mathdata_pipeline.qads.kcenter import kcenter_greedy, kcenter_reference


def _random_rows(seed: int, n: int = 500, d: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _clustered_rows(seed: int, n: int, d: int, clusters: int, spread: float) -> np.ndarray:
    """L2-normalised rows around `clusters` random unit centres (Gaussian noise of norm ~`spread`)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = centres[rng.integers(clusters, size=n)] + spread * rng.standard_normal((n, d)) / math.sqrt(d)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _distances_to(x: np.ndarray, centres: list[int]) -> np.ndarray:
    """Exact (float64) distance of every row to its nearest row among `centres`."""
    x64 = x.astype(np.float64)
    return np.sqrt(((x64[:, None, :] - x64[centres][None, :, :]) ** 2).sum(axis=2)).min(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_float32_picks_equal_the_sklearn_reference(seed):
    x = _random_rows(seed)
    reference = kcenter_reference(x, 20, seed=seed)
    result = kcenter_greedy(x, 20, seed=seed, block_size=32)
    assert result.indices.dtype == np.int64
    np.testing.assert_array_equal(result.indices, reference.indices)
    assert math.isinf(result.min_distance[0]) and math.isinf(reference.min_distance[0])
    np.testing.assert_allclose(result.min_distance[1:], reference.min_distance[1:], rtol=1e-5)
    assert np.all(np.diff(result.min_distance[1:]) <= 0)  # the covering radius never grows
    assert result.final_radius == pytest.approx(reference.final_radius, rel=1e-5)
    assert result.final_radius == pytest.approx(_distances_to(x, list(result.indices)).max(), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_float16_picks_are_farthest_first_within_the_stated_error(seed):
    """Scaled to max norm <= 1, float16 changes a squared distance by at most 2**-10 (coordinates)
    plus 2**-10 (dot rounding), so a pick's exact distance is within that of the true farthest."""
    x = _random_rows(seed)
    scale = 2.0 ** math.ceil(math.log2(np.linalg.norm(x, axis=1).max()))
    result = kcenter_greedy(x, 20, seed=seed, storage="float16", block_size=32)
    reference = kcenter_reference(x, 20, seed=seed)
    assert result.indices[0] == reference.indices[0]
    for i in range(1, 20):
        exact = _distances_to(x, list(result.indices[:i]))
        exact[result.indices[:i]] = -1
        farthest = exact.max()
        tolerance = 2 * (2.0**-10 + 2.0**-9 / (2 * farthest / scale)) * scale
        assert exact[result.indices[i]] >= farthest - tolerance
        assert result.min_distance[i] == pytest.approx(exact[result.indices[i]], abs=tolerance)
    assert result.final_radius == pytest.approx(reference.final_radius, rel=0.02)


def test_picks_do_not_depend_on_blocks_or_pruning():
    x = _clustered_rows(5, n=3000, d=32, clusters=30, spread=0.5)
    for storage in ("float32", "float16"):
        baseline = kcenter_greedy(x, 80, seed=7, storage=storage, prune=False, block_size=256)
        for prune, block_size in [(False, 7), (True, 32), (True, 100), (True, 4096)]:
            other = kcenter_greedy(x, 80, seed=7, storage=storage, prune=prune, block_size=block_size)
            np.testing.assert_array_equal(other.indices, baseline.indices)
            np.testing.assert_array_equal(other.min_distance, baseline.min_distance)
            assert other.final_radius == baseline.final_radius


def test_same_seed_same_picks_and_core_set_respected():
    x = _random_rows(11, n=400)
    first = kcenter_greedy(x, 25, seed=3)
    assert np.array_equal(first.indices, kcenter_greedy(x, 25, seed=3).indices)
    assert first.indices[0] == np.random.default_rng(3).integers(400)
    assert not np.array_equal(first.indices, kcenter_greedy(x, 25, seed=4).indices)
    core = [5, 17, 123, 399]
    with_core = kcenter_greedy(x, 25, seed=3, initial=core)
    assert len(with_core.indices) == 25 and len(set(with_core.indices.tolist())) == 25
    assert not set(with_core.indices.tolist()) & set(core)
    np.testing.assert_array_equal(with_core.indices, kcenter_reference(x, 25, seed=3, initial=core).indices)
    assert with_core.indices[0] == int(np.argmax(_distances_to(x, core)))  # farthest from the core set
    assert with_core.final_radius == pytest.approx(_distances_to(x, core + list(with_core.indices)).max(), rel=1e-5)


def test_quotas_cap_groups_and_picks_stay_farthest_first_among_allowed_rows():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    groups = np.array(["far"] * 100 + ["mid"] * 200 + ["near"] * 300, dtype=object)
    x[:100] *= 4  # the "far" group is spread out: unconstrained, it would take most picks
    free = kcenter_greedy(x, 30, seed=1, groups=groups)
    assert (groups[free.indices] == "far").sum() > 10
    quotas = {"far": 3, "mid": 5}
    result = kcenter_greedy(x, 30, seed=1, groups=groups, quotas=quotas, block_size=64)
    picked = groups[result.indices]
    assert (picked == "far").sum() == 3 and (picked == "mid").sum() == 5 and (picked == "near").sum() == 22
    used = {"far": 0, "mid": 0, "near": 0}
    used[picked[0]] += 1
    for i in range(1, 30):
        exact = _distances_to(x, list(result.indices[:i]))
        allowed = np.array([used[g] < quotas.get(g, 10**9) for g in groups]) & ~np.isin(
            np.arange(600), result.indices[:i]
        )
        assert result.indices[i] == int(np.flatnonzero(allowed)[np.argmax(exact[allowed])])
        used[picked[i]] += 1
    # rows of full groups still count as points to cover
    assert result.final_radius == pytest.approx(_distances_to(x, list(result.indices)).max(), rel=1e-5)
    np.testing.assert_array_equal(
        kcenter_greedy(x, 30, seed=1, groups=groups, quotas=quotas, prune=False).indices, result.indices
    )


def test_pruning_skips_most_blocks_on_clustered_data():
    x = _clustered_rows(9, n=8000, d=32, clusters=40, spread=0.15)
    pruned = kcenter_greedy(x, 60, seed=0, block_size=100)
    full = kcenter_greedy(x, 60, seed=0, prune=False, block_size=100)
    np.testing.assert_array_equal(pruned.indices, full.indices)
    stats = pruned.stats
    assert stats["blocks_skipped"] > 0.7 * (stats["blocks_skipped"] + stats["blocks_visited"])
    assert stats["rows_updated"] < 0.3 * full.stats["rows_updated"]
    assert full.stats["blocks_skipped"] == 0 and full.stats["rows_updated"] == 60 * 8000


def test_zero_picks():
    x = _random_rows(0, n=10)
    empty = kcenter_greedy(x, 0)
    assert empty.indices.shape == (0,) and math.isinf(empty.final_radius)
    covered = kcenter_greedy(x, 0, initial=[1, 2])
    assert covered.final_radius == pytest.approx(_distances_to(x, [1, 2]).max(), rel=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(k=11), "k=11 exceeds the 10 rows"),
        (dict(k=9, initial=[0, 1]), "k=9 exceeds the 8 rows"),
        (dict(nan_row=7), "x row 7 has a NaN"),
        (dict(groups=np.array(["a"] * 9)), "groups has 9 entries but x has 10 rows"),
        (dict(quotas={"a": 1}), "quotas need groups"),
        (dict(groups=np.array(["a"] * 5 + ["b"] * 5), quotas={"a": 1, "b": 2}), "k=4 exceeds the 3 picks"),
        (dict(groups=np.array(["a"] * 10), quotas={"a": -1}), "quota for group 'a'"),
        (dict(initial=[3, 10]), "initial row 10 is outside"),
        (dict(initial=[3, 3]), "more than once"),
        (dict(k=-1), "k must be a non-negative integer"),
        (dict(storage="int8"), "storage must be one of"),
        (dict(block_size=0), "block_size must be a positive integer"),
    ],
)
def test_bad_input_names_the_problem(change, message):
    x = _random_rows(0, n=10)
    change = dict(change)
    if "nan_row" in change:
        x[change.pop("nan_row"), 3] = np.nan
    kwargs = dict(dict(k=4), **change)
    with pytest.raises(ValueError, match=message):
        kcenter_greedy(x, kwargs.pop("k"), **kwargs)


def test_bad_shape_names_the_problem():
    with pytest.raises(ValueError, match="non-empty 2-D array"):
        kcenter_greedy(np.zeros(5, dtype=np.float32), 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where there is no GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        kcenter_greedy(_random_rows(0, n=10), 2, device="cuda")


@pytest.mark.gpu
def test_cuda_matches_the_cpu():
    x = _clustered_rows(4, n=20_000, d=64, clusters=50, spread=0.5)
    groups = np.array(["a", "b", "c", "d"] * 5000)
    for storage in ("float32", "float16"):
        cpu = kcenter_greedy(x, 100, seed=2, storage=storage, groups=groups, quotas={"a": 10})
        gpu = kcenter_greedy(x, 100, seed=2, storage=storage, groups=groups, quotas={"a": 10}, device="cuda")
        assert (groups[gpu.indices] == "a").sum() <= 10
        assert gpu.final_radius == pytest.approx(cpu.final_radius, rel=1e-5 if storage == "float32" else 1e-2)
        if storage == "float32":
            np.testing.assert_array_equal(gpu.indices, cpu.indices)


@pytest.mark.parametrize("prune", [False, True])
def test_bonus_picks_the_argmax_of_distance_plus_bonus(prune):
    """The weighted rule (argmax of min-distance + bonus) equals the reference loop for every
    block layout, and a large bonus really changes the picks."""
    x = _clustered_rows(5, n=3000, d=16, clusters=12, spread=0.4)
    bonus = np.random.default_rng(5).uniform(0, 0.5, len(x))
    reference = kcenter_reference(x, 40, seed=1, bonus=bonus)
    result = kcenter_greedy(x, 40, seed=1, bonus=bonus, prune=prune, block_size=64)
    np.testing.assert_array_equal(result.indices, reference.indices)
    np.testing.assert_allclose(result.min_distance[1:], reference.min_distance[1:], rtol=1e-5)
    for i in range(1, 40):  # each pick maximises exact distance + bonus among the rows not yet picked
        score = _distances_to(x, list(result.indices[:i])) + bonus
        score[result.indices[:i]] = -np.inf
        assert score[result.indices[i]] == pytest.approx(score.max(), rel=1e-5)
    plain = kcenter_greedy(x, 40, seed=1, prune=prune, block_size=64)
    assert len(set(plain.indices.tolist()) ^ set(result.indices.tolist())) > 10


def test_bonus_respects_quotas_and_is_validated():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    groups = np.array(["a"] * 100 + ["b"] * 400, dtype=object)
    bonus = np.where(groups == "a", 10.0, 0.0)  # without quotas, every pick after the random first is an "a"
    free = kcenter_greedy(x, 50, seed=0, bonus=bonus)
    assert (groups[free.indices[1:]] == "a").all()
    capped = kcenter_greedy(x, 50, seed=0, bonus=bonus, groups=groups, quotas={"a": 10})
    assert (groups[capped.indices] == "a").sum() == 10 and (groups[capped.indices] == "b").sum() == 40
    with pytest.raises(ValueError, match="bonus must hold one value per row"):
        kcenter_greedy(x, 5, bonus=np.zeros(3))
    with pytest.raises(ValueError, match="bonus row 7"):
        kcenter_greedy(x, 5, bonus=np.where(np.arange(500) == 7, np.nan, 0.0))
