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
    SAMPLE_COLUMNS: per problem the first `target` correct samples by sample index. Reads the
    KEEP_COLUMNS, then only the row groups that hold kept rows, and of those only SAMPLE_COLUMNS."""
    parquet = pq.ParquetFile(source, read_dictionary=["problem_id"])
    positions = kept_positions(*parquet.read(columns=KEEP_COLUMNS).columns)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    ends = np.cumsum(sizes, dtype=np.int64)
    groups = np.searchsorted(ends, positions, side="right")
    parts = []
    for group in np.unique(groups).tolist():
        start = int(ends[group] - sizes[group])
        rows = parquet.read_row_group(group, columns=SAMPLE_COLUMNS)
        parts.append(rows.take(pa.array(positions[groups == group] - start)))
    if not parts:
        return parquet.schema_arrow.empty_table().select(SAMPLE_COLUMNS)
    return pa.concat_tables(parts).cast(parts[0].schema.remove_metadata())


def solution_rows(
    pool: pa.Table, samples: pa.Table | None, augmented: pa.Table | None, synthesized: pa.Table | None = None
) -> tuple[pa.Table, dict[str, int]]:
    """Build the solutions of one source.

    Inputs: the question pool; the kept DART samples (`kept_dart_samples`) or None;
    `augmented_responses` (with `kept`) or None; `synthesized_responses` (with `kept`) or None.
    Output: (SOLUTION_SCHEMA table, counts per kind). Rows: every seed reference solution (model
    "reference"), the curated
    correct DARS samples (method "dart"), the kept MuggleMath responses (method "mugglemath") and
    the kept ScaleQuest responses (method "scalequest").
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
                }
            )
            counts[key] += 1
    return pa.Table.from_pylist(rows, schema=SOLUTION_SCHEMA), counts
