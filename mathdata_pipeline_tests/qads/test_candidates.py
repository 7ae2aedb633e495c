"""Candidate rows: the demo's per-group cap samples each generating method on its own."""

from __future__ import annotations

import pyarrow as pa

from mathdata_pipeline.curation.solutions import SOLUTION_SCHEMA
from mathdata_pipeline.qads.candidates import candidate_rows


def _solution(i: int, method: str) -> dict:
    return {"sample_id": f"{method}-{i:03d}", "problem_id": f"p-{i}", "source": "gsm8k", "origin": "seed"} | {
        "method": method,
        "question": f"What is {i}+1?",
        "response": f"\\boxed{{{i + 1}}}",
    }


def test_max_per_group_keeps_rare_dart_rows_beside_many_seed_solutions():
    rows = [_solution(i, "reference") for i in range(200)] + [_solution(i, "dart") for i in range(3)]
    table = candidate_rows(pa.Table.from_pylist(rows, schema=SOLUTION_SCHEMA), None, max_per_group=10, seed=0)
    ids = table.column("candidate_id").to_pylist()
    assert sorted(i for i in ids if i.startswith("dart-")) == ["dart-000", "dart-001", "dart-002"]
    assert sum(i.startswith("reference-") for i in ids) == 10
    assert candidate_rows(pa.Table.from_pylist(rows, schema=SOLUTION_SCHEMA), None).num_rows == 203  # no cap
