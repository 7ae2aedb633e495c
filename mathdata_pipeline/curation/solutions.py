"""The `solutions` table: curated question–response pairs with their origin and provenance.

Sample tables can hold millions of rows: the DART samples are read in two passes (the four
columns that decide which rows are kept, then the solution columns of only the row groups that
hold kept rows), and the other tables only in the columns a solution needs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mathdata_pipeline.dart.sampling import kept_positions

SOLUTION_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("method", pa.string()),
        pa.field("question", pa.string()),
        pa.field("response", pa.string()),
        pa.field("reference_answer", pa.string()),
        pa.field("extracted_answer", pa.string()),
        pa.field("model", pa.string()),
        pa.field("template", pa.string()),
        pa.field("temperature", pa.float32()),
        pa.field("top_p", pa.float32()),
        pa.field("seed", pa.int64()),
        pa.field("grader", pa.string()),
        pa.field("dart_strategies", pa.list_(pa.string())),
        pa.field("dart_primary", pa.bool_()),
    ]
)


# The columns a solution row takes from a sample table, and the ones that decide which DART samples are kept.
SAMPLE_COLUMNS = [
    "sample_id",
    "problem_id",
    "text",
    "extracted_answer",
    "model",
    "template",
    "temperature",
    "top_p",
    "seed",
    "grader",
]
KEEP_COLUMNS = ["problem_id", "sample_index", "correct", "target"]


def kept_dart_samples(source) -> pa.Table:
    """The kept samples of a `rejection_samples` file (a path or an open binary file), in
    SAMPLE_COLUMNS plus `dart_strategies` and `dart_primary`: per problem and per served strategy
    the first `target_<strategy>` correct samples by sample index (the primary's: `target`). A
    sample kept by several strategies is one row listing them all; `dart_primary` says whether the
    primary strategy keeps it. A file without target_<strategy> columns (written before runs served
    several strategies) gives null `dart_strategies` and every kept row primary. Reads the
    KEEP_COLUMNS and the target columns, then only the row groups that hold kept rows, and of those
    only SAMPLE_COLUMNS."""
    parquet = pq.ParquetFile(source, read_dictionary=["problem_id"])
    strategies = [name for name in parquet.schema_arrow.names if name.startswith("target_")]
    decide = parquet.read(columns=[*KEEP_COLUMNS, *strategies])
    keys = [decide.column(name) for name in KEEP_COLUMNS[:-1]]
    primary = kept_positions(*keys, decide.column("target"))
    chosen = [kept_positions(*keys, decide.column(name)) for name in strategies]
    positions = np.unique(np.concatenate([primary, *chosen])).astype(np.int64)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    ends = np.cumsum(sizes, dtype=np.int64)
    groups = np.searchsorted(ends, positions, side="right")
    parts = []
    for group in np.unique(groups).tolist():
        start = int(ends[group] - sizes[group])
        rows = parquet.read_row_group(group, columns=SAMPLE_COLUMNS)
        parts.append(rows.take(pa.array(positions[groups == group] - start)))
    if not parts:
        table = parquet.schema_arrow.empty_table().select(SAMPLE_COLUMNS)
    else:
        table = pa.concat_tables(parts).cast(parts[0].schema.remove_metadata())
    names = [name.removeprefix("target_") for name in strategies]
    table = table.append_column("dart_strategies", _strategy_lists(positions, names, chosen))
    return table.append_column("dart_primary", pa.array(np.isin(positions, primary), pa.bool_()))


def _strategy_lists(positions: np.ndarray, names: list[str], chosen: list[np.ndarray]) -> pa.Array:
    """Per kept position, the names of the strategies whose positions hold it (in `names` order);
    all null when there are no strategy columns."""
    if not names:
        return pa.nulls(len(positions), pa.list_(pa.string()))
    member = np.stack([np.isin(positions, kept) for kept in chosen], axis=1)
    offsets = np.r_[0, np.cumsum(member.sum(axis=1))].astype(np.int32)
    values = pa.array(np.asarray(names, dtype=object)[np.nonzero(member)[1]].tolist(), pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def solution_rows(
    pool: pa.Table, samples: pa.Table | None, augmented: pa.Table | None, synthesized: pa.Table | None = None
) -> tuple[pa.Table, dict[str, int]]:
    """Build the solutions of one source.

    Inputs: the question pool; the kept DART samples (`kept_dart_samples`) or None;
    `augmented_responses` (with `kept`) or None; `synthesized_responses` (with `kept`) or None.
    Output: (SOLUTION_SCHEMA table, counts per kind, and `dart_solutions/<strategy>` per served DART
    strategy). Rows: every seed reference solution (model "reference"), the curated correct DARS
    samples (method "dart", one row per sample however many served strategies keep it, listed in
    `dart_strategies`, `dart_primary` when the run's primary strategy keeps it), the kept
    MuggleMath responses (method "mugglemath") and the kept ScaleQuest responses (method
    "scalequest"); `dart_strategies` and `dart_primary` are null on the rows of other methods.
    """
    problems = {r["problem_id"]: r for r in pool.to_pylist()}
    rows = []
    for p in problems.values():
        if p["origin"] == "seed" and p["reference_solution"]:
            rows.append(
                {
                    "sample_id": f"ref-{p['problem_id']}",
                    "problem_id": p["problem_id"],
                    "source": p["source"],
                    "origin": "seed",
                    "method": "reference",
                    "question": p["question"],
                    "response": p["reference_solution"],
                    "reference_answer": p["reference_answer"],
                    "extracted_answer": p["reference_answer"],
                    "model": "reference",
                }
            )
    counts = {"seed_solutions": len(rows), "dart_solutions": 0, "mugglemath_solutions": 0, "scalequest_solutions": 0}
    for table, method, key in (
        (samples, "dart", "dart_solutions"),
        (
            augmented.filter(augmented.column("kept")) if augmented is not None else None,
            "mugglemath",
            "mugglemath_solutions",
        ),
        (
            synthesized.filter(synthesized.column("kept")) if synthesized is not None else None,
            "scalequest",
            "scalequest_solutions",
        ),
    ):
        for s in table.to_pylist() if table is not None else []:
            p = problems.get(s["problem_id"])
            if p is None:  # the question left the pool (duplicate or benchmark overlap)
                continue
            rows.append(
                {
                    "sample_id": s["sample_id"],
                    "problem_id": s["problem_id"],
                    "source": p["source"],
                    "origin": p["origin"],
                    "method": method,
                    "question": p["question"],
                    "response": s["text"],
                    "reference_answer": p["reference_answer"],
                    "extracted_answer": s["extracted_answer"],
                    "model": s["model"],
                    "template": s["template"],
                    "temperature": s["temperature"],
                    "top_p": s["top_p"],
                    "seed": s["seed"],
                    "grader": s["grader"],
                    "dart_strategies": s.get("dart_strategies"),
                    "dart_primary": s.get("dart_primary"),
                }
            )
            counts[key] += 1
            for strategy in s.get("dart_strategies") or []:
                counts[f"dart_solutions/{strategy}"] = counts.get(f"dart_solutions/{strategy}", 0) + 1
    return pa.Table.from_pylist(rows, schema=SOLUTION_SCHEMA), counts
