"""The examples influence is computed on: training rows (solutions) and the validation set V
(graded responses to held-back problems), and the prompt both are scored under."""

from __future__ import annotations

import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.influence.gradient_features import Example

VALIDATION_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("response", pa.string()),
        ("correct", pa.bool_()),
        ("kind", pa.string()),
    ]
)


def scoring_prompt(question: str) -> str:
    """The prompt every training and validation example is scored under (loss on the response only)."""
    return f"Question: {question}\nAnswer: "


def sample_training_rows(solutions: pa.Table, max_examples: int) -> pa.Table:
    """The solutions whose influence is scored: all, or a seeded sample of `max_examples` (0 = all)."""
    if not max_examples or solutions.num_rows <= max_examples:
        return solutions
    ids = solutions.column("sample_id").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: stable_hash("influence", ids[i]))
    return solutions.take(pa.array(sorted(order[:max_examples]), pa.int64()))


def as_examples(table: pa.Table, id_column: str) -> list[Example]:
    """Examples (id, scoring prompt, response) of a table with `question` and `response`."""
    return [
        Example(r[id_column], scoring_prompt(r["question"]), r["response"])
        for r in table.select([id_column, "question", "response"]).to_pylist()
    ]


def validation_rows(problems: list[dict], samples: pa.Table, *, include_reference_solutions: bool) -> pa.Table:
    """The validation set V: every sampled response with text (V_C when graded correct, V_I
    otherwise), plus each problem's gold solution in V_C when `include_reference_solutions`.

    Inputs: the problems (rows with problem_id, question, reference_solution); the graded
    samples (SAMPLE_SCHEMA). Output: VALIDATION_SCHEMA rows.
    """
    question = {p["problem_id"]: p["question"] for p in problems}
    rows = [
        {
            "example_id": r["sample_id"],
            "problem_id": r["problem_id"],
            "question": question[r["problem_id"]],
            "response": r["text"],
            "correct": bool(r["correct"]),
            "kind": "sampled",
        }
        for r in samples.select(["sample_id", "problem_id", "text", "correct"]).to_pylist()
        if r["text"]
    ]
    if include_reference_solutions:
        rows += [
            {
                "example_id": f"ref-{p['problem_id']}",
                "problem_id": p["problem_id"],
                "question": p["question"],
                "response": p["reference_solution"],
                "correct": True,
                "kind": "reference",
            }
            for p in problems
            if p["reference_solution"]
        ]
    return pa.Table.from_pylist(rows, schema=VALIDATION_SCHEMA)
