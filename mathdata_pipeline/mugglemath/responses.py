"""MuggleMath responses: the project's majority vote (`grading.voting`) gives an augmented question
its answer; the kept responses agree with it, were not cut off, pass the GSM8K calculator check and
take new calculation steps (RFT's farthest path among equal ones). An AugMATH question's own
solution, written with it, is the first ballot of its vote."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA, sample_id
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.grading import TRUNCATED_FINISH_REASONS, Grader
from mathdata_pipeline.grading.voting import vote_on_samples
from mathdata_pipeline.mugglemath.calculator import check_calculator_annotations
from mathdata_pipeline.mugglemath.dedup import dedup_by_equations

SOLUTION_TEMPLATE = "augmath"  # the `template` of a ballot that is an AugMATH question's own solution


def solution_ballots(questions: pa.Table) -> pa.Table:
    """Sample rows (SAMPLE_SCHEMA) for the solutions AugMATH wrote with its questions.

    Input: `augmented_questions` rows; those with a `reference_solution` give one row each:
    sample_index -1 (so it comes first in the vote's sample order and wins its ties), template
    "augmath", and the model, seed and sampling settings of the request that wrote it (from the
    row's `source_record`). Its reply was complete (truncated items are never parsed), so
    `finish_reason` is "stop".
    """
    rows = []
    for q in questions.select(["problem_id", "reference_solution", "source_record"]).to_pylist():
        if not q["reference_solution"]:
            continue
        record = json.loads(q["source_record"])
        params = SamplingParams(record["temperature"], record["top_p"], record["max_tokens"], seed=record["seed"])
        rows.append(
            {
                **dict.fromkeys(SAMPLE_SCHEMA.names),
                "sample_id": sample_id(q["problem_id"], record["model"], SOLUTION_TEMPLATE, params, -1),
                "problem_id": q["problem_id"],
                "model": record["model"],
                "template": SOLUTION_TEMPLATE,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "max_tokens": params.max_tokens,
                "seed": params.seed,
                "round": record["round"],
                "sample_index": -1,
                "text": q["reference_solution"],
                "finish_reason": "stop",
            }
        )
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def vote_columns(
    samples: pa.Table, grader: Grader, *, check_annotations: bool, min_share: float
) -> tuple[pa.Table, dict[str, int]]:
    """Add `majority_answer`, `agreement`, `annotation_ok` and `kept` to the response samples.

    Per question the vote of `grading.voting` decides the answer (null below `min_share`); a
    response is kept when it is in the winning group, was not cut off at the token limit (the vote
    already gives such a response no ballot; this rule holds on its own), its GSM8K calculator
    annotations hold (when `check_annotations`; parsed, never evaluated) and
    `dedup.dedup_by_equations` keeps it among the candidates of its question. Output: (table, counts).
    """
    table, votes = vote_on_samples(samples, grader, min_share=min_share)
    rows = table.to_pylist()
    counts: Counter[str] = Counter()
    for vote in votes.values():
        counts["questions_with_answer" if vote.answer is not None else "questions_without_agreement"] += 1
    candidates: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        row["annotation_ok"] = (
            check_calculator_annotations(row["text"]).ok if (check_annotations and row["text"]) else None
        )
        row["kept"] = False
        truncated = row["finish_reason"] in TRUNCATED_FINISH_REASONS
        counts["truncated_responses"] += truncated
        if row["correct"] and row["majority_answer"] is not None and not truncated:
            if row["annotation_ok"] is False:
                counts["dropped_bad_annotation"] += 1
            else:
                candidates.setdefault(row["problem_id"], []).append(i)
    for members in candidates.values():
        members.sort(key=lambda i: rows[i]["sample_index"])
        unique = dedup_by_equations([rows[i]["text"] for i in members])
        counts["dropped_same_equations"] += len(members) - len(unique)
        for j in unique:
            rows[members[j]]["kept"] = True
    schema = table.schema.append(pa.field("annotation_ok", pa.bool_())).append(pa.field("kept", pa.bool_()))
    counts["responses_kept"] = sum(r["kept"] for r in rows)
    counts["solutions_kept"] = sum(r["kept"] and r["template"] == SOLUTION_TEMPLATE for r in rows)
    return pa.Table.from_pylist(rows, schema=schema), dict(counts)
