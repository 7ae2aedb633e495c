"""95% intervals of the score summaries."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.evaluation.summary import breakdown, mean_interval, overall, wilson_interval


def test_wilson_interval_matches_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # never a zero-width interval at 0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mean_interval_shrinks_with_more_items():
    rng = np.random.default_rng(0)
    small, large = rng.normal(-1.0, 0.5, 20), rng.normal(-1.0, 0.5, 2000)
    m_small, lo_small, hi_small = mean_interval(small)
    m_large, lo_large, hi_large = mean_interval(large)
    assert lo_small < m_small < hi_small and lo_large < -1.0 < hi_large
    assert hi_large - lo_large < hi_small - lo_small
    assert math.isnan(mean_interval(np.array([1.0]))[1])


def test_breakdowns_per_model_benchmark_and_math_level():
    rows = [
        {
            "model": "fine-tuned",
            "benchmark": "math500",
            "level": 2,
            "subject": "Algebra",
            "correct": True,
            "mean_logprob": -1.0,
        },
        {
            "model": "fine-tuned",
            "benchmark": "math500",
            "level": 5,
            "subject": "Geometry",
            "correct": False,
            "mean_logprob": -2.0,
        },
        {
            "model": "fine-tuned",
            "benchmark": "theoremqa",
            "level": None,
            "subject": "Calculus",
            "correct": None,
            "mean_logprob": -3.0,
        },
        {
            "model": "base",
            "benchmark": "math500",
            "level": 2,
            "subject": "Algebra",
            "correct": False,
            "mean_logprob": None,
        },
    ]
    table = pa.Table.from_pylist(rows)
    totals = overall(table)
    assert totals["fine-tuned"]["accuracy_items"] == 2 and totals["fine-tuned"]["accuracy"] == 0.5
    assert totals["fine-tuned"]["mean_logprob"] == pytest.approx(-2.0) and totals["base"]["logprob_items"] == 0
    assert set(breakdown(table, "benchmark")) == {"base / math500", "fine-tuned / math500", "fine-tuned / theoremqa"}
    assert set(breakdown(table, "level")) == {"base / level 2", "fine-tuned / level 2", "fine-tuned / level 5"}
    assert "fine-tuned / Calculus" not in breakdown(table, "subject")  # subjects of MATH items only
