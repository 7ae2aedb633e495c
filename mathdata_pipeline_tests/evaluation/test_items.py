"""Every mixture is scored on the same items: a salted, nested sample per benchmark."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mathdata_pipeline.evaluation.items import check_benchmarks, logprob_target, select_items


def _benchmarks() -> pa.Table:
    rows = []
    for name, count in (("gsm8k_test", 30), ("math500", 20), ("theoremqa", 10)):
        for i in range(count):
            rows.append(
                {
                    "problem_id": f"{name}-{i}",
                    "benchmark": name,
                    "question": f"question {i}",
                    "reference_answer": None if name == "math500" and i == 0 else str(i),
                    "reference_solution": None if name == "theoremqa" else f"solution {i}",
                    "level": 3 if name == "math500" else None,
                    "subject": "Algebra" if name == "math500" else None,
                    "license": "MIT",
                }
            )
    return pa.Table.from_pylist(rows)


def test_the_same_salt_gives_the_same_items_and_accuracy_items_are_a_subset():
    table = _benchmarks()
    items = select_items(table, ["gsm8k_test", "math500"], 8, 3, "s")
    again = select_items(table.take(pa.array(list(range(table.num_rows))[::-1])), ["gsm8k_test", "math500"], 8, 3, "s")
    assert items.column("problem_id").to_pylist() == again.column("problem_id").to_pylist()
    assert items.num_rows == 16 and set(items.column("benchmark").to_pylist()) == {"gsm8k_test", "math500"}
    sampled = items.filter(items.column("accuracy_sampled")).column("problem_id").to_pylist()
    assert len(sampled) <= 6 and len([s for s in sampled if s.startswith("gsm8k")]) == 3
    assert "math500-0" not in sampled  # no reference answer: nothing to grade against
    larger = select_items(table, ["gsm8k_test", "math500"], 12, 3, "s").column("problem_id").to_pylist()
    assert set(items.column("problem_id").to_pylist()) <= set(larger)
    other = select_items(table, ["gsm8k_test", "math500"], 8, 3, "t").column("problem_id").to_pylist()
    assert other != items.column("problem_id").to_pylist()
    assert select_items(table, ["theoremqa"], 0, 0, "s").num_rows == 10  # 0 = every item


def test_unknown_benchmarks_are_named():
    assert check_benchmarks([], ["b", "a"], what="x") == ["a", "b"]
    with pytest.raises(ValueError, match=r"sft_model.benchmarks: unknown benchmark\(s\) gsm9k; known: a, b"):
        check_benchmarks(["gsm9k", "a"], ["a", "b"], what="sft_model.benchmarks")


def test_items_without_a_solution_are_scored_on_their_answer():
    assert logprob_target("Add them. #### 4", "4") == ("Add them. #### 4", "solution")
    assert logprob_target(None, "$10-4 n$") == ("The answer is $\\boxed{10-4 n}$.", "answer")
    assert logprob_target("  ", None) == (None, "none")
