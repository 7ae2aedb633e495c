"""DARS controller: allocation arithmetic, stop rules, caps, summary, and a seeded simulation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.dart.assets import RejectionConfig, ServedStrategy, _fail_scale
from mathdata_pipeline.dart.dars import (
    DarsConfig,
    difficulty_from_samples,
    k_for_size,
    plan_round,
    sized,
    start,
    strategy_targets,
    summary,
    targets,
    update,
    whole_set_scale,
)
from mathdata_pipeline.storage.resources import TableStore


def run_to_end(state, outcome):
    """Sample every planned query with `outcome(query_index, trial_index) -> bool` until done."""
    while plan := plan_round(state):
        graded = [
            (qid, outcome(state.index[qid], state.n_trials[state.index[qid]] + j)) for qid, n in plan for j in range(n)
        ]
        state = update(state, graded)
    return state


def test_prop2diff_targets_round_up_at_least_one_hardest_gets_k_p():
    config = DarsConfig("prop2diff", k_p=5)
    assert targets([0.0, 0.3, 0.6], config).tolist() == [1, 3, 5]  # 5 * 0.5 = 2.5 -> 3; max gets k_p
    assert targets([0.0, 0.1, 0.5, 1.0], DarsConfig("prop2diff", k_p=10)).tolist() == [1, 1, 5, 10]
    assert targets([0.0, 0.0], config).tolist() == [1, 1]  # nothing ever fails: one each, no 0/0


def test_prop2diff_linear_formula_and_float_noise():
    linear = DarsConfig("prop2diff", k_p=5, prop2diff_formula="linear")
    assert targets([0.0, 0.3, 0.6], linear).tolist() == [1, 2, 3]  # 1.5 -> 2, hardest gets 3, not k_p
    assert targets([1.0], linear).tolist() == [5]
    assert 100 * 0.07 > 7  # float noise the formula must not round up
    assert targets([0.07], DarsConfig("prop2diff", k_p=100, prop2diff_formula="linear")).tolist() == [7]


def test_uniform_vrt_band_targets_and_missing_difficulty():
    fail = [0.0, 0.25, 0.5, 1.0]
    assert targets(fail, DarsConfig("uniform", k_u=4)).tolist() == [4, 4, 4, 4]
    assert targets([np.nan], DarsConfig("uniform", k_u=4)).tolist() == [4]
    assert targets(fail, DarsConfig("vrt")).tolist() == [0, 0, 0, 0]
    band = DarsConfig("band", k_u=3, band=(0.5, 0.75))  # pass rates 1, .75, .5, 0; bounds inclusive
    assert targets(fail, band).tolist() == [0, 3, 3, 0]
    with pytest.raises(ValueError, match="difficulty round"):
        targets([0.5, np.nan], DarsConfig("prop2diff"))


def test_difficulty_from_samples():
    fail = difficulty_from_samples([5, 4, 0], [4, 0, 0])
    assert fail[0] == 0.2 and fail[1] == 1.0 and np.isnan(fail[2])
    with pytest.raises(ValueError, match="n_correct <= n_trials"):
        difficulty_from_samples([2], [3])


@pytest.mark.parametrize("strict, trials", [(False, 3), (True, 4)])
def test_stop_rule_at_least_vs_strictly_greater(strict, trials):
    state = run_to_end(start(["q"], DarsConfig("uniform", k_u=3, strict_stop=strict)), lambda i, t: True)
    assert state.n_trials.tolist() == [trials] and state.n_correct.tolist() == [trials]
    assert state.stop_reason.tolist() == ["target_reached"]


def test_never_solved_query_stops_exactly_at_n_max():
    config = DarsConfig("prop2diff", k_p=4, n_max=10, samples_per_round=3)
    state = start(["hard", "easy"], config, n_trials=[2, 2], n_correct=[0, 2])
    assert plan_round(state) == [("hard", 3)]  # easy already has its 1 correct from the difficulty round
    sizes = []
    while plan := plan_round(state):
        sizes.append(plan[0][1])
        state = update(state, [("hard", False)] * plan[0][1])
    assert sizes == [3, 3, 2] and state.n_trials.tolist() == [10, 2]
    assert state.stop_reason.tolist() == ["n_max", "target_reached"]


def test_vrt_fixed_trials_count_the_difficulty_round():
    state = start(["a", "b"], DarsConfig("vrt", vrt_trials=5, n_max=3), n_trials=[2, 2], n_correct=[2, 0])
    state = run_to_end(state, lambda i, t: i == 0)
    assert state.n_trials.tolist() == [5, 5] and state.n_correct.tolist() == [5, 0]  # no target stop
    assert state.stop_reason.tolist() == ["vrt_done", "vrt_done"]


def test_band_drops_queries_outside_the_band():
    config = DarsConfig("band", k_u=2, band=(0.25, 0.75), n_max=8)
    state = start(list("abcd"), config, n_trials=[4] * 4, n_correct=[0, 1, 2, 4])
    assert state.stop_reason.tolist() == ["out_of_band", "", "target_reached", "out_of_band"]  # c: 2 correct already
    assert plan_round(state) == [("b", 1)]
    state = run_to_end(state, lambda i, t: True)
    assert state.n_trials.tolist() == [4, 5, 4, 4]
    assert state.stop_reason.tolist() == ["out_of_band", "target_reached", "target_reached", "out_of_band"]
    assert summary(state)["reach_ratio"] == 1.0 and summary(state)["with_target"] == 2


def test_plan_round_schedules_only_unfinished_queries_and_respects_max_samples():
    config = DarsConfig("uniform", k_u=2, n_max=6, samples_per_round=2)
    state = start(list("abcd"), config, n_trials=[2, 2, 6, 5], n_correct=[2, 1, 0, 0])
    assert state.stop_reason.tolist() == ["target_reached", "", "n_max", ""]
    assert plan_round(state) == [("b", 2), ("d", 1)]  # d has one trial left under n_max
    assert plan_round(state, max_samples=1) == [("b", 1)]
    assert plan_round(state, max_samples=0) == []


def test_update_rejects_unknown_ids_and_start_validates():
    state = start(["a"], DarsConfig())
    with pytest.raises(ValueError, match="unknown query_id 'zz'"):
        update(state, [("zz", True)])
    with pytest.raises(ValueError, match="distinct"):
        start(["a", "a"], DarsConfig())
    with pytest.raises(ValueError, match="difficulty round"):
        start(["a"], DarsConfig("prop2diff"))
    with pytest.raises(ValueError, match="needs band"):
        DarsConfig("band")
    with pytest.raises(ValueError, match="strategy must be one of"):
        DarsConfig("vrs")
    assert update(state, []).n_trials.tolist() == [0] and state.stop_reason.tolist() == [""]


def test_summary_hand_worked_example():
    # fail rates 0.0, 0.5, 1.0 (bins [0,.2), [.4,.6), [.8,1]); prop2diff k_p=4 targets 1, 2, 4.
    state = start(list("abc"), DarsConfig("prop2diff", k_p=4, n_max=6), n_trials=[2, 2, 2], n_correct=[2, 1, 0])
    state = update(state, [("b", True), ("c", False), ("c", True)])
    state = update(state, [("c", False), ("c", False)])  # c hits n_max = 6 with 1 correct of 4 wanted
    report = summary(state, levels=["Level 1", "Level 3", "Level 3"])
    assert state.stop_reason.tolist() == ["target_reached", "target_reached", "n_max"]
    assert {
        k: report[k]
        for k in ("queries", "with_target", "reached", "raw_samples", "correct_samples", "with_correct", "active")
    } == {
        "queries": 3,
        "with_target": 3,
        "reached": 2,
        "raw_samples": 11,
        "correct_samples": 5,
        "with_correct": 3,
        "active": 0,
    }
    assert report["reach_ratio"] == pytest.approx(2 / 3) and report["samples_per_correct"] == pytest.approx(11 / 5)
    assert report["stop_reasons"] == {"n_max": 1, "target_reached": 2}
    bins = report["by_difficulty"]
    assert list(bins) == ["[0.0,0.2)", "[0.2,0.4)", "[0.4,0.6)", "[0.6,0.8)", "[0.8,1.0]"]
    assert [bins[b]["queries"] for b in bins] == [1, 0, 1, 0, 1]
    assert [bins[b]["correct_samples"] for b in bins] == [2, 0, 2, 0, 1]
    assert report["by_level"]["Level 3"] == {
        "queries": 2,
        "with_target": 2,
        "reached": 1,
        "reach_ratio": 0.5,
        "raw_samples": 9,
        "correct_samples": 3,
        "samples_per_correct": 3.0,
        "with_correct": 2,
    }
    table = state.to_table()
    assert table.column("target").to_pylist() == [1, 2, 4] and table.column("done").to_pylist() == [True] * 3


def test_k_for_size():
    fail = [0.0, 0.5, 1.0]
    assert k_for_size(fail, 10, DarsConfig("uniform")) == 4  # 3 * 4 = 12 >= 10 > 9
    k = k_for_size(fail, 10, DarsConfig("prop2diff"))
    assert (
        targets(fail, DarsConfig("prop2diff", k_p=k)).sum()
        >= 10
        > targets(fail, DarsConfig("prop2diff", k_p=k - 1)).sum()
    )
    with pytest.raises(ValueError):
        k_for_size(fail, 10, DarsConfig("vrt"))


def test_sized_sets_the_strategys_k_and_rejection_samples_takes_target_size():
    fail = [0.0, 0.5, 1.0]
    assert sized(DarsConfig("uniform", k_u=99, k_p=7), fail, 10) == DarsConfig("uniform", k_u=4, k_p=7)
    hard = sized(DarsConfig("prop2diff", k_u=99, n_max=50), fail, 10)
    assert hard.k_u == 99 and targets(fail, hard).sum() >= 10 > targets(fail, replace(hard, k_p=hard.k_p - 1)).sum()
    assert RejectionConfig(strategy="uniform", k_u=3).dars_config(np.asarray(fail)).k_u == 3  # no target_size
    assert RejectionConfig(strategy="uniform", target_size=10).dars_config(np.asarray(fail)).k_u == 4
    with pytest.raises(ValueError, match="fail rates"):
        RejectionConfig(strategy="uniform", target_size=10).dars_config()
    with pytest.raises(ValueError, match="target_size needs a strategy with targets"):
        RejectionConfig(strategy="vrt", target_size=10)


def test_simulation_prop2diff_gives_hard_queries_more_correct_samples_than_uniform():
    rng = np.random.default_rng(7)
    n, n_d = 300, 8
    pass_rate = rng.uniform(0.05, 0.95, n)
    outcomes = rng.random((n, 512)) < pass_rate[:, None]  # common random numbers for both strategies
    d_correct = outcomes[:, :n_d].sum(axis=1)
    ids = [f"q{i}" for i in range(n)]
    fail = difficulty_from_samples(np.full(n, n_d), d_correct)
    hard = pass_rate < 0.3
    correct_on_hard = {}
    for config in (DarsConfig("uniform", k_u=8, n_max=512), DarsConfig("prop2diff", n_max=512)):
        if config.strategy == "prop2diff":  # same dataset size as uniform
            config = DarsConfig("prop2diff", k_p=k_for_size(fail, 8 * n, config), n_max=512)
        state = run_to_end(
            start(ids, config, n_trials=np.full(n, n_d), n_correct=d_correct), lambda i, t: bool(outcomes[i, t])
        )
        assert summary(state)["reach_ratio"] == 1.0
        correct_on_hard[config.strategy] = int(np.minimum(state.n_correct, state.target)[hard].sum())
    assert correct_on_hard["prop2diff"] > 1.5 * correct_on_hard["uniform"]


# --- Several strategies served by one run ---


def test_served_strategies_sample_to_the_largest_target_and_keep_each_own():
    fail = [0.0, 0.25, 0.5, 1.0]
    both = DarsConfig("uniform", k_u=3, k_p=8, serve=("prop2diff",))
    assert both.served == ("uniform", "prop2diff")
    own = strategy_targets(fail, both)
    assert own["uniform"].tolist() == [3, 3, 3, 3] and own["prop2diff"].tolist() == [1, 2, 4, 8]
    assert targets(fail, both).tolist() == [3, 3, 4, 8]  # what sampling needs
    assert targets(fail, DarsConfig("uniform", k_u=3, k_p=8)).tolist() == [3, 3, 3, 3]  # alone: as before
    assert DarsConfig("prop2diff", serve=("prop2diff", "uniform")).served == ("prop2diff", "uniform")
    for bad in (DarsConfig("vrt"), DarsConfig("band", band=(0.1, 0.9))):
        with pytest.raises(ValueError, match="serving several strategies"):
            replace(bad, serve=("uniform",))
    with pytest.raises(ValueError, match="serving several strategies"):
        DarsConfig("uniform", serve=("vrt",))


def test_run_serving_two_strategies_stops_at_the_max_target_and_reports_each():
    config = DarsConfig("uniform", k_u=2, k_p=4, n_max=30, serve=("prop2diff",))
    state = start(["a", "b", "c"], config, n_trials=[2, 2, 2], n_correct=[2, 1, 0])  # fail rates 0, .5, 1
    assert state.target.tolist() == [2, 2, 4]  # uniform 2, 2, 2; prop2diff 1, 2, 4
    state = run_to_end(state, lambda q, t: t % 2 == 0)  # every second sample correct
    assert state.n_correct.tolist() == [2, 2, 4] and state.n_trials.tolist() == [2, 3, 9]
    report = summary(state)["by_strategy"]
    assert list(report) == ["uniform", "prop2diff"]
    assert report["uniform"] == {"k": 2, "targets_total": 6, "rows": 6, "reached": 3, "reach_ratio": 1.0}
    assert report["prop2diff"] == {"k": 4, "targets_total": 7, "rows": 7, "reached": 3, "reach_ratio": 1.0}


def test_one_target_size_gives_every_served_strategy_its_own_k_for_the_same_size():
    fail = np.array([0.0, 0.1, 0.3, 0.6, 0.9, 1.0])
    config = RejectionConfig(strategy="prop2diff", serve_strategies=[ServedStrategy.uniform], target_size=40)
    dars_config = config.dars_config(fail)
    assert dars_config.served == ("prop2diff", "uniform")
    for name, wanted in strategy_targets(fail, dars_config).items():
        field = "k_p" if name == "prop2diff" else "k_u"
        smaller = replace(dars_config, **{field: getattr(dars_config, field) - 1})
        assert wanted.sum() >= 40 > strategy_targets(fail, smaller)[name].sum(), name  # the smallest k per strategy
    assert dars_config.k_u == 7 and strategy_targets(fail, dars_config)["uniform"].sum() == 42
    with pytest.raises(ValueError, match="serve_strategies needs a primary strategy"):
        RejectionConfig(strategy="vrt", serve_strategies=[ServedStrategy.uniform])
    assert RejectionConfig(strategy="uniform").dars_config().served == ("uniform",)  # the single key keeps working


def test_prop2diff_whole_set_scale_over_several_difficulty_ledgers():
    math, gsm8k = np.array([0.1, 0.2, 0.4]), np.array([0.0, 0.8, np.nan])
    scale = whole_set_scale(np.concatenate([math, gsm8k]))
    assert scale == 0.8 and whole_set_scale([0.0, np.nan]) is None
    alone = DarsConfig("prop2diff", k_p=8)
    assert targets(math, alone).tolist() == [2, 4, 8]  # this partition's hardest gets k_p
    assert targets(math, replace(alone, fail_scale=scale)).tolist() == [1, 2, 4]  # the whole set's hardest would
    assert targets(math, replace(alone, fail_scale=scale, prop2diff_formula="linear")).tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match="exceeds fail_scale"):
        targets(math, replace(alone, fail_scale=0.3))
    assert RejectionConfig(strategy="prop2diff", k_p=8).dars_config(math, scale).fail_scale == 0.8


def test_rejection_samples_reads_the_whole_set_scale_from_every_difficulty_ledger(tmp_path):
    store = TableStore(root=str(tmp_path))
    store.write(pa.table({"fail_rate": [0.1, 0.2, 0.4]}), "difficulty_ledger", "math")
    store.write(pa.table({"fail_rate": pa.array([0.0, 0.8, None], pa.float64())}), "difficulty_ledger", "gsm8k")
    assert _fail_scale(RejectionConfig(strategy="prop2diff"), store) is None  # default: this partition's own
    assert _fail_scale(RejectionConfig(strategy="prop2diff", prop2diff_scale="all_partitions"), store) == 0.8
