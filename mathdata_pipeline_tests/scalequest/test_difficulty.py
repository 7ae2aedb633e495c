"""The trained difficulty scorer: fail rates from graded samples, a deterministic held-out split,
ridge regression, correlations that say when they cannot be measured, and a real fit on MATH
questions with real MiniLM embeddings."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.qads.embeddings import SentenceEmbedder
from mathdata_pipeline.scalequest.difficulty import (
    FailRates,
    correlations,
    fail_rates_from_samples,
    fit_difficulty_scorer,
    fit_ridge,
    heldout_split,
    label_table,
    load_scorer,
    scorer_table,
)


def test_fail_rates_count_graded_samples_only():
    rows = [("a", True), ("a", False), ("a", None), ("a", False), ("b", True), ("b", True)]
    samples = pa.Table.from_pylist(
        [
            {**dict.fromkeys(SAMPLE_SCHEMA.names), "sample_id": str(i), "problem_id": p, "correct": c}
            for i, (p, c) in enumerate(rows)
        ],
        schema=SAMPLE_SCHEMA,
    )
    labels, unlabelled = fail_rates_from_samples(samples, {"a": "qa", "b": "qb", "c": "qc"})
    assert labels.problem_ids == ["a", "b"] and unlabelled == 1  # c never got a graded sample
    np.testing.assert_allclose(labels.fail_rates, [2 / 3, 0.0])
    assert labels.samples.tolist() == [3, 2]


def test_heldout_split_is_deterministic_and_never_empty_or_everything():
    ids = [f"p{i}" for i in range(10)]
    mask = heldout_split(ids, 0.2, "salt")
    assert mask.sum() == 2 and (heldout_split(ids, 0.2, "salt") == mask).all()
    assert (heldout_split(ids, 0.2, "other") != mask).any()
    assert heldout_split(ids[:2], 0.9, "s").sum() == 1 and heldout_split(ids, 0.0, "s").sum() == 0
    with pytest.raises(ValueError):
        heldout_split(ids, 1.0, "s")


def test_ridge_recovers_a_linear_relation_and_correlations_explain_gaps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x @ np.array([0.5, -0.2, 0.0, 0.1, 0.3]) + 0.4
    weights, bias = fit_ridge(x, y, alpha=1e-6)
    np.testing.assert_allclose(weights, [0.5, -0.2, 0.0, 0.1, 0.3], atol=1e-5)
    assert bias == pytest.approx(0.4, abs=1e-5)
    assert correlations(np.array([0.1, 0.2]), np.array([0.0, 1.0]))[2] == "only 2 held-out questions"
    pearson, spearman, note = correlations(np.array([0.2, 0.5, 0.9]), np.ones(3))
    assert (pearson, spearman) == (None, None) and "same measured fail rate (1.00)" in note
    pearson, spearman, note = correlations(np.array([0.1, 0.2, 0.4]), np.array([0.0, 0.5, 1.0]))
    assert spearman == pytest.approx(1.0) and pearson > 0.9 and note == ""


def test_a_scorer_fit_on_math_levels_ranks_unseen_questions(data_root):
    """MATH's human difficulty levels stand in for fail rates here (no solver at test scale): the
    regressor must learn from question text alone to rank held-out questions by difficulty."""
    with gzip.open(data_root / "math" / "math_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    easy = [r for r in rows[::5] if r["level"] == "Level 1"][:100]
    rows = easy + [r for r in rows[::20] if r["level"] == "Level 5"][:100]
    levels = np.array([int(r["level"][-1]) for r in rows], dtype=np.float64)
    labels = FailRates(
        problem_ids=[r["unique_id"] for r in rows],
        questions=[r["problem"] for r in rows],
        samples=np.full(len(rows), 4.0),
        correct=4.0 - (levels - 1.0),  # level 1 -> fail rate 0, level 5 -> 1
    )
    embedder = SentenceEmbedder("embedded")
    scorer, report, heldout, predicted = fit_difficulty_scorer(
        labels, embedder.embed, embedder=embedder.model, alpha=1.0, heldout_fraction=0.25, salt="t"
    )
    assert len(rows) == 200 and report.n_heldout == heldout.sum() == 50 and report.n_train == 150
    assert report.heldout_spearman is not None and report.heldout_spearman > 0.3, report
    restored = load_scorer(scorer_table(scorer, report))
    np.testing.assert_allclose(
        restored.score(labels.questions[:5], embedder.embed), predicted[:5], atol=1e-5
    )  # float32 embeddings differ slightly by batch
    table = label_table(labels, heldout, predicted)
    assert table.num_rows == len(rows) and table.column("heldout").to_pylist() == heldout.tolist()
    with pytest.raises(ValueError, match="not a difficulty scorer table"):
        load_scorer(table)
