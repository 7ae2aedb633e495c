"""Paired differences with paired-bootstrap intervals and verdicts, on score tables built here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.evaluation.compare import compare_all, compare_pair, paired_bootstrap, side_rows, verdict
from mathdata_pipeline.evaluation.comparisons import Comparison
from mathdata_pipeline.evaluation.scoring import ITEM_SCHEMA, another_model


def _scores(spec, model, logprobs, correct, *, settings="s1", revision="r1", benchmarks=None) -> pa.Table:
    rows = []
    for i, (lp, ok) in enumerate(zip(logprobs, correct)):
        rows.append(
            {
                "spec": spec,
                "model": model,
                "model_id": f"sft_model/{spec}",
                "model_revision": revision,
                "item_id": f"item-{i}",
                "benchmark": benchmarks[i] if benchmarks else "gsm8k_test",
                "logprob_target": "solution",
                "mean_logprob": None if lp is None else float(lp),
                "accuracy_sampled": ok is not None,
                "correct": ok,
                "settings": settings,
            }
        )
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


PAIR = Comparison(name="qads-vs-random", a="openmathmix", b="openmathmix-random", claim="QaDS beats random")


def test_a_clear_gain_is_better_a_loss_worse_and_equal_models_no_difference():
    rng = np.random.default_rng(0)
    b = rng.normal(-1.5, 0.3, 200)
    correct = [bool(x) for x in rng.random(200) < 0.3]
    base = _scores("openmathmix-random", "fine-tuned", b, correct)
    gain = compare_pair(
        PAIR,
        _scores("openmathmix", "fine-tuned", b + 0.05, correct),
        base,
        samples=1000,
        seed=0,
        primary="mean_logprob",
    )
    overall = {r["measure"]: r for r in gain.rows if r["scope"] == "all"}
    assert overall["mean_logprob"]["verdict"] == "better" and overall["mean_logprob"]["ci_low"] > 0
    assert overall["mean_logprob"]["difference"] == pytest.approx(0.05)
    assert overall["accuracy"]["verdict"] == "no detectable difference" and overall["accuracy"]["ci_low"] == 0.0
    assert gain.verdict.startswith("qads-vs-random: openmathmix is better than openmathmix-random (mean_logprob)")
    assert "95% CI" in gain.verdict and "accuracy +0.0 pts" in gain.verdict
    loss = compare_pair(
        PAIR,
        _scores("openmathmix", "fine-tuned", b - 0.05, correct),
        base,
        samples=1000,
        seed=0,
        primary="mean_logprob",
    )
    assert [r["verdict"] for r in loss.rows if r["scope"] == "all"][0] == "worse"


def test_the_bootstrap_interval_covers_the_true_difference_at_the_expected_width():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.1, 1.0, 400)
    low, high = paired_bootstrap(differences, 2000, seed=0)
    assert low < 0.1 < high and 0.15 < high - low < 0.25  # about 2 x 1.96 x 1 / sqrt(400)
    assert paired_bootstrap(differences, 2000, seed=0) == (low, high)  # seeded
    assert (
        verdict(0.01, 0.2) == "better"
        and verdict(-0.2, -0.01) == "worse"
        and verdict(-0.1, 0.1) == "no detectable difference"
    )


def test_only_items_scored_on_both_sides_are_paired_and_changes_are_listed():
    a = _scores(
        "openmathmix",
        "fine-tuned",
        [-1.0, -1.0, None, -1.0],
        [True, False, True, None],
        benchmarks=["g", "m", "m", "g"],
    )
    b = _scores(
        "openmathmix-random", "fine-tuned", [-2.0, -2.0, -2.0], [False, False, True], benchmarks=["g", "m", "m"]
    )
    result = compare_pair(PAIR, a, b, samples=200, seed=0, primary="accuracy")
    by_key = {(r["measure"], r["scope"]): r for r in result.rows}
    assert by_key[("mean_logprob", "all")]["items"] == 2 and by_key[("accuracy", "all")]["items"] == 3
    assert by_key[("mean_logprob", "m")]["items"] == 1 and by_key[("accuracy", "g")]["items"] == 1
    changes = dict(zip(result.items.column("item_id").to_pylist(), result.items.column("accuracy_change").to_pylist()))
    assert changes == {"item-0": "gained", "item-1": "same", "item-2": "same"}
    assert result.verdict.startswith(
        "qads-vs-random: openmathmix shows no detectable difference from openmathmix-random (accuracy) — accuracy +33.3 pts"
    )


def test_sides_resolve_to_specs_base_rows_and_previous_scores():
    tables = {
        ("benchmark_scores", "openmathmix"): pa.concat_tables(
            [
                _scores("openmathmix", "fine-tuned", [-1.0], [True]),
                _scores("openmathmix", "base", [-2.0], [False], revision="b"),
            ]
        ),
        ("benchmark_scores_previous", "openmathmix"): _scores(
            "openmathmix", "fine-tuned", [-3.0], [False], revision="r0"
        ),
    }

    def read(asset, spec):
        return tables.get((asset, spec))

    base, _ = side_rows(read, "base", "openmathmix")
    assert base.column("model").to_pylist() == ["base"]
    previous, _ = side_rows(read, "openmathmix@previous", "openmathmix")
    assert previous.column("model_revision").to_pylist() == ["r0"]
    missing, why = side_rows(read, "openmathmix-random", "openmathmix")
    assert missing is None and why == "benchmark_scores[openmathmix-random] does not exist yet"
    tables[("benchmark_scores", "openmathmix-random")] = _scores(
        "openmathmix-random", "fine-tuned", [-1.0], [True], settings="s2"
    )
    pairs = [
        PAIR,
        Comparison(name="vs-base", a="openmathmix", b="base"),
        Comparison(name="vs-last-week", a="openmathmix", b="openmathmix@previous"),
        Comparison(name="vs-missing", a="openmathmix", b="openmathmix-no-mugglemath"),
    ]
    results, skipped = compare_all(pairs, read, samples=100, seed=0, primary="mean_logprob")
    assert [r.comparison.name for r in results] == ["vs-base", "vs-last-week"]
    assert "scored with different settings" in skipped[0] and skipped[1].startswith("vs-missing: benchmark_scores")


def test_scores_of_another_model_are_kept_as_the_previous_ones():
    old = _scores("openmathmix", "fine-tuned", [-1.0], [True], revision="r1")
    assert not another_model(old, _scores("openmathmix", "fine-tuned", [-1.5], [True], revision="r1"))
    assert another_model(old, _scores("openmathmix", "fine-tuned", [-1.0], [True], revision="r2"))
