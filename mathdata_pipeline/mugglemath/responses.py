"""MuggleMath responses: the project's majority vote (`grading.voting`) gives an augmented question
its answer; the kept responses agree with it, pass the GSM8K calculator check and take new
calculation steps."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from mathdata_pipeline.grading import Grader
from mathdata_pipeline.grading.voting import vote_on_samples
from mathdata_pipeline.mugglemath.calculator import check_calculator_annotations
from mathdata_pipeline.mugglemath.dedup import dedup_by_equations


def vote_columns(
    samples: pa.Table, grader: Grader, *, check_annotations: bool, min_share: float
) -> tuple[pa.Table, dict[str, int]]:
    """Add `majority_answer`, `agreement`, `annotation_ok` and `kept` to the response samples.

    Per question the vote of `grading.voting` decides the answer (null below `min_share`); a
    response is kept when it is in the winning group (so never when cut off at the token limit),
    its GSM8K calculator annotations hold (when `check_annotations`; parsed, never evaluated) and
    its equation sequence is new among the kept ones. Output: (table, counts).
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
        counts["truncated_responses"] += row["finish_reason"] in ("length", "abort")
        if row["correct"] and row["majority_answer"] is not None:
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
    return pa.Table.from_pylist(rows, schema=schema), dict(counts)
