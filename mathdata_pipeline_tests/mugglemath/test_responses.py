"""MuggleMath's kept responses: the project's vote decides the answer; kept responses agree with
it, pass the calculator check, take new calculation steps, and are never cut off."""

from __future__ import annotations

import pyarrow as pa

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.mugglemath.responses import vote_columns


def samples(rows: list[tuple[str | None, str | None]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                **{n: None for n in SAMPLE_SCHEMA.names},
                "sample_id": str(i),
                "problem_id": "p",
                "sample_index": i,
                "text": text,
                "finish_reason": finish,
            }
            for i, (text, finish) in enumerate(rows)
        ],
        schema=SAMPLE_SCHEMA,
    )


def test_vote_keeps_agreeing_responses_with_valid_annotations_once():
    table = samples(
        [
            ("3*4 = <<3*4=12>>12 so \\boxed{12}", "stop"),
            ("3*4 = <<3*4=12>>12 so \\boxed{12}", "stop"),
            ("<<3*4=13>>13 so \\boxed{12}", "stop"),
            ("it is \\boxed{7}", "stop"),
            (None, None),
            ("3 times 4 is <<3*4=12>>12, \\boxed{12}", "length"),
        ]
    )
    with Grader(workers=1) as grader:
        voted, counts = vote_columns(table, grader, check_annotations=True, min_share=0.5)
        assert voted.column("majority_answer").to_pylist() == ["12"] * 6
        # response 1 repeats response 0's equations, 2 has a wrong annotation, 5 was cut off
        assert voted.column("kept").to_pylist() == [True, False, False, False, False, False]
        assert counts["dropped_bad_annotation"] == 1 and counts["dropped_same_equations"] == 1
        assert counts["truncated_responses"] == 1
        assert voted.column("agreement").to_pylist()[0] == 0.75  # 3 of 4 ballots (failed and cut-off ones do not vote)
        no_vote, _ = vote_columns(table, grader, check_annotations=True, min_share=0.9)
    assert set(no_vote.column("majority_answer").to_pylist()) == {None} and not any(no_vote.column("kept").to_pylist())
