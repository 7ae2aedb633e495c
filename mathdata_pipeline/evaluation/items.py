"""Which benchmark items a model is scored on, and what is scored for each.

Every mixture is scored on the same items: per benchmark, the items ordered by a salted hash of
their id, the first `per_benchmark` for the log-probability and the first `accuracy_per_benchmark`
of those for accuracy (so the accuracy sample is a subset, and a larger sample only adds items).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.text import stable_hash

ITEM_COLUMNS = ["problem_id", "benchmark", "question", "reference_answer", "reference_solution", "level", "subject"]


def known_benchmarks(benchmarks: pa.Table) -> list[str]:
    """The benchmark names in an `eval_benchmarks` table, sorted."""
    return sorted(set(benchmarks.column("benchmark").to_pylist()))


def check_benchmarks(names: Sequence[str], allowed: Sequence[str], *, what: str) -> list[str]:
    """`names` (empty = every allowed one), sorted; raises ValueError naming `what` and every
    name that is not allowed."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return sorted(set(names)) if names else sorted(allowed)


def select_items(
    benchmarks: pa.Table, names: Sequence[str], per_benchmark: int, accuracy_per_benchmark: int, salt: str
) -> pa.Table:
    """The items to score: ITEM_COLUMNS plus `accuracy_sampled` (bool), ordered by benchmark and
    salted hash. `per_benchmark` / `accuracy_per_benchmark` of 0 mean every item. Items without
    a reference answer are never sampled for accuracy (nothing to grade against)."""
    table = benchmarks.filter(pc.is_in(benchmarks.column("benchmark"), pa.array(list(names), pa.string())))
    table = table.select(ITEM_COLUMNS)
    ids, names_col = table.column("problem_id").to_pylist(), table.column("benchmark").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: (names_col[i], stable_hash(salt, ids[i])))
    kept, sampled, rank = [], [], {}
    has_answer = pc.is_valid(table.column("reference_answer")).to_pylist()
    for i in order:
        position = rank.get(names_col[i], 0)
        if per_benchmark and position >= per_benchmark:
            continue
        rank[names_col[i]] = position + 1
        kept.append(i)
        sampled.append(has_answer[i] and (not accuracy_per_benchmark or position < accuracy_per_benchmark))
    chosen = table.take(pa.array(kept, pa.int64()))
    return chosen.append_column("accuracy_sampled", pa.array(sampled, pa.bool_()))


def logprob_target(reference_solution: str | None, reference_answer: str | None) -> tuple[str | None, str]:
    """(text whose log-probability is measured, kind): the reference solution, or for benchmarks
    that have only answers (CollegeMath, DeepMind Mathematics, TheoremQA) the answer as a final
    sentence `The answer is $\\boxed{…}$.`; (None, "none") when the item has neither."""
    if reference_solution and reference_solution.strip():
        return reference_solution, "solution"
    if reference_answer and reference_answer.strip():
        return f"The answer is $\\boxed{{{reference_answer.strip().strip('$').strip()}}}$.", "answer"
    return None, "none"
