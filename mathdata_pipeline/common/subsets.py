"""Deterministic subsets of problem tables (the same salt picks the same rows everywhere)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.text import stable_hash


def solver_subset(pool: pa.Table, *, max_questions: int, salt: str) -> pa.Table:
    """The questions with a reference answer, optionally a deterministic sample of `max_questions`
    (ordered by a salted hash of the id, so the same salt picks the same questions; 0 = all)."""
    usable = pool.filter(pc.is_valid(pool.column("reference_answer")))
    if max_questions <= 0 or usable.num_rows <= max_questions:
        return usable
    ids = usable.column("problem_id").to_pylist()
    ranked = sorted(range(len(ids)), key=lambda i: stable_hash(salt, ids[i]))
    return usable.take(pa.array(sorted(ranked[:max_questions]), pa.int64()))
