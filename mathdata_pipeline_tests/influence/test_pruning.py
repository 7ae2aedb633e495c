"""The pruning decision of a spec: held-out rows dropped, influence by mean or max aggregate and
difference or min fusion, and the baselines at the same pruned size (exact decisions on a
hand-made score table)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.influence.pruning import decide_pruning
from mathdata_pipeline.influence.scores import SCORE_SCHEMA
from mathdata_pipeline.mixtures.spec import InfluencePrune

IDS = ["a", "b", "c", "d", "e"]
SCORES = pa.Table.from_pylist(
    [
        # sample, s_C, s_I, s_C max, s_I max, perplexity, similarity, random
        dict(zip(("sample_id", "s_correct", "s_incorrect", "s_correct_max", "s_incorrect_max"), row[:5]))
        | {"perplexity": row[5], "embedding_similarity": row[6], "random": row[7], "heldout": False, "fused_rank": 0.0}
        for row in [
            ("a", 0.10, 0.90, 0.9, 0.1, 1.0, 0.5, 0.3),
            ("b", 0.40, 0.10, 0.4, 0.1, 5.0, 0.1, 0.9),
            ("c", 0.30, 0.20, 0.3, 0.2, 2.0, 0.4, 0.1),
            ("d", 0.20, 0.30, 0.2, 0.3, 4.0, 0.3, 0.6),
            ("e", 0.50, 0.80, 0.25, 0.8, 3.0, 0.2, 0.5),
        ]
    ]
    + [
        {"sample_id": "h", "heldout": True},
    ],
    schema=SCORE_SCHEMA,
)


def dropped(spec: InfluencePrune, selected=(*IDS, "h", "z")) -> list[str]:
    decision = decide_pruning(list(selected), SCORES, spec)
    return sorted(i for i, gone in decision.dropped.items() if gone)


def test_held_out_rows_are_dropped_and_unscored_rows_kept():
    decision = decide_pruning([*IDS, "h", "z"], SCORES, InfluencePrune(fraction=0.4))
    assert decision.counts == {
        "influence_scored": 5,
        "influence_unscored": 1,
        "influence_heldout": 1,
        "influence_pruned": 2,
    }
    assert decision.dropped["h"] and decision.reasons["h"].startswith("held out")
    assert not decision.dropped["z"] and decision.scores["z"] is None


def test_influence_rules_aggregates_and_fusions():
    # Mean scores: r_C = [0, .75, .5, .25, 1], r_I = [1, 0, .25, .5, .75].
    # difference = [-1, .75, .25, -.25, .25]: the two lowest are a and d.
    assert dropped(InfluencePrune(fraction=0.4)) == ["a", "d", "h"]
    # min(r_C, 1 - r_I) = [0, .75, .5, .25, .25]: a, then the tie d/e goes to the smaller id, d.
    assert dropped(InfluencePrune(fraction=0.4, fusion="min")) == ["a", "d", "h"]
    assert dropped(InfluencePrune(fraction=0.2, rule="high_harm")) == ["a", "h"]
    # Max aggregate: s_C max = [.9, .4, .3, .2, .25], s_I max = [.1, .1, .2, .3, .8]: differences
    # [.875, .625, 0, -.75, -.75], so a becomes the best row and d and e go.
    assert dropped(InfluencePrune(fraction=0.4, aggregate="max")) == ["d", "e", "h"]
    decision = decide_pruning(IDS, SCORES, InfluencePrune(fraction=0.2, rule="low_benefit"))
    assert decision.scores["a"] == pytest.approx(0.1) and "low_benefit s_C=0.1" in decision.reasons["a"]


def test_baselines_prune_the_same_number_of_rows():
    sizes = set()
    for spec, expected in (
        (InfluencePrune(fraction=0.4, by="perplexity", keep="low"), ["b", "d", "h"]),  # highest perplexity 5, 4
        (InfluencePrune(fraction=0.4, by="embedding_similarity"), ["b", "e", "h"]),  # least similar .1, .2
        (InfluencePrune(fraction=0.4, by="random"), ["c", "a", "h"]),  # lowest random .1, .3
    ):
        decision = decide_pruning([*IDS, "h"], SCORES, spec)
        assert sorted(i for i, gone in decision.dropped.items() if gone) == sorted(expected)
        sizes.add(decision.counts["influence_pruned"])
        assert all(r.startswith(f"pruned by {spec.by}") for i, r in decision.reasons.items() if r and i != "h")
    assert sizes == {2}
    assert np.isclose(decide_pruning(IDS, SCORES, InfluencePrune(fraction=0.4, by="random")).scores["c"], 0.1)
