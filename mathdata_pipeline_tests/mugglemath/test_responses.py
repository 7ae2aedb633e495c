"""MuggleMath's kept responses: the project's vote decides the answer; kept responses agree with
it, pass the calculator check, take new calculation steps, and are never cut off."""

from __future__ import annotations

import json

import pyarrow as pa

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.mugglemath.responses import solution_ballots, vote_columns


def samples(rows: list[tuple[str | None, str | None]], problem_id: str = "p") -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                **{n: None for n in SAMPLE_SCHEMA.names},
                "sample_id": str(i),
                "problem_id": problem_id,
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


def test_a_cut_off_response_is_never_kept_even_with_the_winning_answer():
    table = samples(
        [
            ("2 + 2 = 4, so \\boxed{4}", "stop"),
            ("Two and two make \\boxed{4}", "stop"),
            ("Counting on from 2 by 2 gives 3, 4 and 10 - 6 = 4, \\boxed{4}", "length"),  # new steps, cut off
        ]
    )
    with Grader(workers=1) as grader:
        voted, counts = vote_columns(table, grader, check_annotations=False, min_share=0.5)
    assert voted.column("majority_answer").to_pylist() == ["4"] * 3
    assert voted.column("kept").to_pylist() == [True, True, False]
    assert voted.column("agreement").to_pylist()[2] == 1.0  # 2 of 2 ballots: the cut-off one does not vote
    assert counts["truncated_responses"] == 1


def test_an_augmath_solution_is_the_first_ballot_and_breaks_ties():
    question = {
        "problem_id": "aug",
        "reference_solution": "Since $r+s=9$, the answer is $\\boxed{9}$.",
        "source_record": json.dumps(
            {
                "round": 1,
                "model": "teacher",
                "rewrite_type": "augmath",
                "seed": 7,
                "temperature": 0.7,
                "top_p": 0.95,
                "max_tokens": 512,
            }
        ),
    }
    ballots = solution_ballots(
        pa.Table.from_pylist([question, {**question, "problem_id": "none", "reference_solution": None}])
    )
    assert ballots.num_rows == 1 and ballots.schema == SAMPLE_SCHEMA
    row = ballots.to_pylist()[0]
    assert (row["sample_index"], row["template"], row["model"], row["seed"], row["round"]) == (
        -1,
        "augmath",
        "teacher",
        7,
        1,
    )
    responses = samples([("So it is \\boxed{14}.", "stop")], problem_id="aug")  # against the solution: a 1-1 tie
    with Grader(workers=1) as grader:
        voted, counts = vote_columns(
            pa.concat_tables([responses, ballots]), grader, check_annotations=False, min_share=0.5
        )
    by_index = {r["sample_index"]: r for r in voted.to_pylist()}
    assert by_index[-1]["majority_answer"] == "9" and by_index[-1]["agreement"] == 0.5  # the tie goes to the solution
    assert by_index[-1]["kept"] and not by_index[0]["kept"] and counts["solutions_kept"] == 1
