"""The `random` combine rule: the baseline a QaDS selection of the same size is compared with."""

from __future__ import annotations

import numpy as np

from mathdata_pipeline.mixtures.spec import KindSpec, load_mixture_spec
from mathdata_pipeline.qads.selection import Candidates, select


def _candidates(n: int = 40) -> Candidates:
    rng = np.random.default_rng(0)
    return Candidates(
        ids=[f"c{i:03d}" for i in range(n)],
        sources=["gsm8k" if i % 2 else "math" for i in range(n)],
        origins=["seed"] * n,
        quality=rng.random(n).astype(np.float32),
        embeddings=rng.normal(size=(n, 8)).astype(np.float32),
    )


def _selected(table) -> list[str]:
    return [c for c, s in zip(table.column("candidate_id").to_pylist(), table.column("selected").to_pylist()) if s]


def test_random_selects_as_many_rows_as_qads_with_the_same_spec():
    qads, random = load_mixture_spec("openmathmix"), load_mixture_spec("openmathmix-random")
    assert random.reasoning.combine_rule == "random" and qads.reasoning.combine_rule == "filter_then_kcenter"
    assert (random.reasoning.selection_ratio, random.reasoning.origins, random.general_share) == (
        qads.reasoning.selection_ratio,
        qads.reasoning.origins,
        qads.general_share,
    )
    candidates = _candidates()
    budget = round(qads.reasoning.selection_ratio * len(candidates.ids))
    by_qads = select(candidates, qads.reasoning, budget, kind="reasoning", seed=0)
    by_random = select(candidates, random.reasoning, budget, kind="reasoning", seed=0)
    assert len(_selected(by_qads)) == len(_selected(by_random)) == budget
    assert _selected(by_qads) != _selected(by_random)
    picked = by_random.filter(by_random.column("selected"))
    assert all(d.startswith("selected: random pick") for d in picked.column("decision").to_pylist())
    assert picked.column("min_distance").null_count == picked.num_rows  # no distances: nothing was measured


def test_random_is_seeded_and_ignores_the_order_of_the_candidates():
    spec = KindSpec(combine_rule="random")
    candidates = _candidates()
    first = _selected(select(candidates, spec, 10, kind="reasoning", seed=3))
    assert first == _selected(select(candidates, spec, 10, kind="reasoning", seed=3))
    assert first != _selected(select(candidates, spec, 10, kind="reasoning", seed=4))
    order = np.arange(len(candidates.ids))[::-1]
    reversed_candidates = Candidates(
        [candidates.ids[i] for i in order],
        [candidates.sources[i] for i in order],
        [candidates.origins[i] for i in order],
        candidates.quality[order],
        candidates.embeddings[order],
    )
    assert sorted(_selected(select(reversed_candidates, spec, 10, kind="reasoning", seed=3))) == sorted(first)


def test_random_respects_per_source_quotas():
    spec = KindSpec(combine_rule="random", per_source_quota={"math": 2})
    table = select(_candidates(), spec, 12, kind="reasoning", seed=0)
    sources = [
        s for s, chosen in zip(table.column("source").to_pylist(), table.column("selected").to_pylist()) if chosen
    ]
    assert sources.count("math") == 2 and len(sources) == 12
