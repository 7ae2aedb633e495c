"""The `solutions` table: curated question–response pairs with their origin and provenance."""

from __future__ import annotations

import pyarrow as pa

from mathdata_pipeline.dart.sampling import curate

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


def solution_rows(
    pool: pa.Table, samples: pa.Table | None, augmented: pa.Table | None, synthesized: pa.Table | None = None
) -> tuple[pa.Table, dict[str, int]]:
    """Build the solutions of one source.

    Inputs: the question pool; `rejection_samples` (with `target`) or None; `augmented_responses`
    (with `kept`) or None; `synthesized_responses` (with `kept`) or None. Output: (SOLUTION_SCHEMA
    table, counts per kind). Rows: every seed reference solution (model "reference"), the curated
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
        (curate(samples) if samples is not None else None, "dart", "dart_solutions"),
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
