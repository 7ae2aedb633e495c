"""QaDS selection decisions, directly: quotas under every rule, the `random` baseline, the quality filter, how measured and
predicted quality combine, evaluation splits, the general budget and the blocking check."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mathdata_pipeline.mixtures.spec import KindSpec, MixtureSpec, load_mixture_spec
from mathdata_pipeline.qads.checks import evaluation_split_check
from mathdata_pipeline.qads.kcenter import kcenter_greedy
from mathdata_pipeline.qads.selection import (
    DECISION_SCHEMA,
    Candidates,
    combine_quality,
    decide_spec,
    evaluation_split_warnings,
    kind_candidates,
    select,
)


def _candidates(n_far: int = 60, n_near: int = 340, seed: int = 0, evaluation: np.ndarray | None = None) -> Candidates:
    """`far` rows are spread out and of high quality (the rules love them); `near` rows are tight."""
    rng = np.random.default_rng(seed)
    far = rng.standard_normal((n_far, 8)) * 5
    near = rng.standard_normal((n_near, 8)) * 0.3
    n = n_far + n_near
    quality = np.r_[rng.uniform(0.8, 1.0, n_far), rng.uniform(0.0, 0.7, n_near)]
    return Candidates(
        ids=[f"c{i:04d}" for i in range(n)],
        sources=["far"] * n_far + ["near"] * n_near,
        origins=["open"] * n,
        q_measured=np.full(n, np.nan),
        q_predicted=quality,
        evaluation=np.zeros(n, dtype=bool) if evaluation is None else evaluation,
        embeddings=np.vstack([far, near]).astype(np.float32),
    )


def _selected(table: pa.Table) -> pa.Table:
    return table.filter(pc.field("selected"))


@pytest.mark.parametrize("rule", ["filter_then_kcenter", "weighted"])
def test_quotas_hold_under_every_rule(rule):
    """The audit's case: 200 picks where one source is capped at 10 (the weighted rule used to take 97)."""
    candidates = _candidates()
    free = select(candidates, KindSpec(combine_rule=rule, quality_keep_ratio=1.0), 200, kind="reasoning", seed=0)
    assert _selected(free).column("source").to_pylist().count("far") > 10  # the cap is binding
    spec = KindSpec(combine_rule=rule, quality_keep_ratio=1.0, per_source_quota={"far": 10})
    decided = select(candidates, spec, 200, kind="reasoning", seed=0)
    sources = _selected(decided).column("source").to_pylist()
    assert sources.count("far") == 10 and len(sources) == 200
    far_left = decided.filter((pc.field("source") == "far") & ~pc.field("selected"))
    assert set(far_left.column("decision").to_pylist()) == {"not selected: quota of 10 rows for far reached"}


def test_quota_limits_the_budget_when_too_few_rows_are_allowed():
    candidates = _candidates(n_far=20, n_near=30)
    spec = KindSpec(quality_keep_ratio=1.0, per_source_quota={"far": 5, "near": 10})
    decided = select(candidates, spec, 40, kind="reasoning", seed=0)
    assert _selected(decided).num_rows == 15


def test_filter_then_kcenter_keeps_the_top_share_then_spreads():
    candidates = _candidates()
    spec = KindSpec(combine_rule="filter_then_kcenter", quality_keep_ratio=0.5, quality="predicted")
    decided = select(candidates, spec, 50, kind="reasoning", seed=0)
    assert decided.schema.equals(DECISION_SCHEMA) and decided.num_rows == 400
    chosen = _selected(decided)
    assert chosen.num_rows == 50
    threshold = np.sort(candidates.q_predicted)[::-1][199]  # the 200th best of 400
    assert min(chosen.column("quality").to_pylist()) >= threshold - 1e-6
    below = decided.filter(pc.field("quality") < float(threshold) - 1e-6)
    assert below.num_rows == 200
    assert all(
        d.startswith("not selected: quality") and "below the kept 50%" in d for d in below["decision"].to_pylist()
    )
    ranks = sorted(chosen.column("selection_rank").to_pylist())
    assert ranks == list(range(50)) and decided.filter(~pc.field("selected"))["selection_rank"].null_count == 350
    # the picks are k-center greedy over the survivors, in pick order
    survivors = np.flatnonzero(candidates.q_predicted >= threshold - 1e-6)
    expected = survivors[kcenter_greedy(candidates.embeddings[survivors], 50, seed=0).indices]
    order = np.argsort(chosen.column("selection_rank").to_numpy())
    picked = [int(c[1:]) for c in np.asarray(chosen.column("candidate_id").to_pylist())[order]]
    assert picked == expected.tolist()


def test_weighted_rule_trades_distance_for_quality():
    candidates = _candidates()
    spread = select(candidates, KindSpec(combine_rule="weighted", weight=0.0), 30, kind="reasoning", seed=0)
    greedy = kcenter_greedy(candidates.embeddings, 30, seed=0).indices
    assert sorted(int(c[1:]) for c in _selected(spread)["candidate_id"].to_pylist()) == sorted(greedy.tolist())
    # a huge weight turns it into "best quality first" (after the seeded first pick)
    spec = KindSpec(combine_rule="weighted", weight=1000.0, quality="predicted")
    decided = select(candidates, spec, 30, kind="reasoning", seed=0)
    order = np.argsort(_selected(decided)["selection_rank"].to_numpy())
    picked = np.asarray([int(c[1:]) for c in _selected(decided)["candidate_id"].to_pylist()])[order]
    best = np.argsort(-candidates.q_predicted, kind="stable")
    assert set(picked[1:]) <= set(best[:30].tolist())


def test_measured_and_predicted_quality_stay_separate_and_combine_as_the_spec_says():
    measured = np.array([0.0, 1.0, np.nan, np.nan, 0.5])
    predicted = np.array([0.40, 0.45, 0.41, 0.42, np.nan])
    # percentile: measured ranked among measured (0, .5, 1 -> 1/3, 1, 2/3), predictions among unmeasured rows
    np.testing.assert_allclose(combine_quality(measured, predicted, "percentile"), [1 / 3, 1, 0.5, 1, 2 / 3])
    np.testing.assert_allclose(combine_quality(measured, predicted, "predicted"), [0.40, 0.45, 0.41, 0.42, 0.0])
    np.testing.assert_allclose(
        combine_quality(measured, predicted, "measured_else_predicted"), [0.0, 1.0, 0.41, 0.42, 0.5]
    )
    with pytest.raises(ValueError, match="unknown quality rule"):
        combine_quality(measured, predicted, "best")
    candidates = _candidates(n_far=3, n_near=2)
    candidates.q_measured = measured
    candidates.q_predicted = predicted
    decided = select(candidates, KindSpec(selection_ratio=1.0), 5, kind="reasoning", seed=0)
    assert decided["q_measured"].to_pylist()[:2] == [0.0, 1.0] and decided["q_measured"].null_count == 2
    assert decided["q_predicted"].null_count == 1
    np.testing.assert_allclose(decided["quality"].to_numpy(), [1 / 3, 1, 0.5, 1, 2 / 3], rtol=1e-6)


def test_evaluation_splits_are_never_candidates_unless_the_spec_names_them():
    evaluation = np.zeros(400, dtype=bool)
    evaluation[:60] = True  # the whole "far" source is an evaluation split
    candidates = _candidates(evaluation=evaluation)
    decided = select(candidates, KindSpec(quality_keep_ratio=1.0), 100, kind="general", seed=0)
    assert _selected(decided).column("source").to_pylist().count("far") == 0
    excluded = decided.filter(pc.field("evaluation_split"))
    assert set(excluded["decision"].to_pylist()) == {
        "not selected: far is an evaluation split (not listed in evaluation_sources)"
    }
    assert evaluation_split_warnings(decided) == []
    allowed = select(
        candidates, KindSpec(quality_keep_ratio=1.0, evaluation_sources=["far"]), 100, kind="general", seed=0
    )
    taken = _selected(allowed).column("source").to_pylist().count("far")
    assert taken > 0
    assert evaluation_split_warnings(allowed) == [
        f"{taken} selected general rows come from far, an evaluation split the spec allows in evaluation_sources"
    ]


def _tables(n_reasoning: int = 40, n_general: int = 30, eval_general: int = 10):
    rng = np.random.default_rng(1)
    n = n_reasoning + n_general
    ids = [f"r{i}" for i in range(n_reasoning)] + [f"g{i}" for i in range(n_general)]
    embeddings = pa.table(
        {
            "candidate_id": ids,
            "kind": ["reasoning"] * n_reasoning + ["general"] * n_general,
            "source": ["gsm8k"] * n_reasoning + ["hh"] * eval_general + ["self"] * (n_general - eval_general),
            "origin": ["seed"] * n_reasoning + ["general"] * n_general,
            "evaluation_split": [False] * n_reasoning + [True] * eval_general + [False] * (n_general - eval_general),
        }
    )
    quality = pa.table({"candidate_id": ids, "q_label": [None] * n, "q_pred": rng.uniform(size=n).tolist()})
    return embeddings, rng.standard_normal((n, 4)).astype(np.float32), quality


def test_decide_spec_budgets_count_eligible_rows_and_the_check_guards_them():
    embeddings, matrix, quality = _tables()
    spec = MixtureSpec(
        reasoning=KindSpec(selection_ratio=0.5),
        general=KindSpec(selection_ratio=1.0, quality_keep_ratio=1.0),
        general_share=0.25,
    )
    decisions, counts, candidates = decide_spec(embeddings, matrix, quality, spec, None)
    assert counts["reasoning/selected"] == 20 and counts["general/selected"] == round(20 * 0.25 / 0.75)
    assert counts["general/evaluation_split_excluded"] == 10 and counts["general/evaluation_split_selected"] == 0
    assert len(candidates["general"].ids) == 30
    check = evaluation_split_check(decisions, spec)
    assert check.passed and check.metadata["evaluation_rows_selected"].value == 0
    # a tampered decisions table (an evaluation row selected without consent) fails the check
    rows = decisions.to_pylist()
    hh = next(r for r in rows if r["source"] == "hh")
    hh["selected"] = True
    failed = evaluation_split_check(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), spec)
    assert not failed.passed and "general/hh: 1 rows" in failed.description
    consenting = spec.model_copy(update={"general": KindSpec(selection_ratio=1.0, evaluation_sources=["hh"])})
    assert evaluation_split_check(pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), consenting).passed


def test_a_candidate_without_a_quality_row_is_a_clear_error():
    embeddings, matrix, quality = _tables()
    with pytest.raises(ValueError, match="candidate r0 has no quality_scores row"):
        kind_candidates(embeddings, matrix, quality.slice(1), KindSpec(), "reasoning")


def _random_candidates(n: int = 40) -> Candidates:
    rng = np.random.default_rng(0)
    return Candidates(
        ids=[f"c{i:03d}" for i in range(n)],
        sources=["gsm8k" if i % 2 else "math" for i in range(n)],
        origins=["seed"] * n,
        q_measured=np.full(n, np.nan),
        q_predicted=rng.random(n),
        evaluation=np.zeros(n, dtype=bool),
        embeddings=rng.normal(size=(n, 8)).astype(np.float32),
    )


def _selected_ids(table) -> list[str]:
    return [c for c, s in zip(table.column("candidate_id").to_pylist(), table.column("selected").to_pylist()) if s]


def test_random_selects_as_many_rows_as_qads_with_the_same_spec():
    qads, random = load_mixture_spec("openmathmix"), load_mixture_spec("openmathmix-random")
    assert random.reasoning.combine_rule == "random" and qads.reasoning.combine_rule == "filter_then_kcenter"
    assert (random.reasoning.selection_ratio, random.reasoning.origins, random.general_share) == (
        qads.reasoning.selection_ratio,
        qads.reasoning.origins,
        qads.general_share,
    )
    candidates = _random_candidates()
    budget = round(qads.reasoning.selection_ratio * len(candidates.ids))
    by_qads = select(candidates, qads.reasoning, budget, kind="reasoning", seed=0)
    by_random = select(candidates, random.reasoning, budget, kind="reasoning", seed=0)
    assert len(_selected_ids(by_qads)) == len(_selected_ids(by_random)) == budget
    assert _selected_ids(by_qads) != _selected_ids(by_random)
    picked = by_random.filter(by_random.column("selected"))
    assert all(d.startswith("selected: random pick") for d in picked.column("decision").to_pylist())
    assert picked.column("min_distance").null_count == picked.num_rows  # no distances: nothing was measured


def test_random_is_seeded_and_ignores_the_order_of_the_random_candidates():
    spec = KindSpec(combine_rule="random")
    candidates = _random_candidates()
    first = _selected_ids(select(candidates, spec, 10, kind="reasoning", seed=3))
    assert first == _selected_ids(select(candidates, spec, 10, kind="reasoning", seed=3))
    assert first != _selected_ids(select(candidates, spec, 10, kind="reasoning", seed=4))
    order = np.arange(len(candidates.ids))[::-1]
    reversed_candidates = Candidates(
        ids=[candidates.ids[i] for i in order],
        sources=[candidates.sources[i] for i in order],
        origins=[candidates.origins[i] for i in order],
        q_measured=candidates.q_measured[order],
        q_predicted=candidates.q_predicted[order],
        evaluation=candidates.evaluation[order],
        embeddings=candidates.embeddings[order],
    )
    assert sorted(_selected_ids(select(reversed_candidates, spec, 10, kind="reasoning", seed=3))) == sorted(first)


def test_random_respects_per_source_quotas():
    spec = KindSpec(combine_rule="random", per_source_quota={"math": 2})
    table = select(_random_candidates(), spec, 12, kind="reasoning", seed=0)
    sources = [
        s for s, chosen in zip(table.column("source").to_pylist(), table.column("selected").to_pylist()) if chosen
    ]
    assert sources.count("math") == 2 and len(sources) == 12
