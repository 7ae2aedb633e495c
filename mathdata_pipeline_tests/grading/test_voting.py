"""The project's one majority vote: grader equivalence, truncated responses, ties, the share."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.grading.voting import vote_many, vote_on_samples


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=1) as grader:
        yield grader


def boxed(answer: str, finish: str = "stop") -> tuple[str, str]:
    return f"So the answer is $\\boxed{{{answer}}}$.", finish


def test_equivalent_spellings_form_one_group(grader):
    # the case of the restructure issue: 0.5, \frac12 and 1/2 are one answer with three votes
    (vote,) = vote_many(
        [[boxed("3"), boxed("3"), boxed("0.5"), boxed("\\frac12"), boxed("1/2")]], grader, min_share=0.0
    )
    assert (vote.answer, vote.votes, vote.ballots, vote.winner) == ("0.5", 3, 5, 2)
    assert vote.in_winner == (False, False, True, True, True)
    assert vote.share == pytest.approx(0.6)


def test_symbolic_equivalence_through_the_pool(grader):
    (vote,) = vote_many([[boxed("\\sqrt{8}"), boxed("2\\sqrt{2}"), boxed("3")]], grader, min_share=0.5)
    assert vote.answer == "\\sqrt{8}" and vote.votes == 2 and vote.in_winner == (True, True, False)


def test_truncated_responses_neither_vote_nor_win(grader):
    group = [boxed("7", "length"), boxed("7", "length"), boxed("7", "length"), boxed("5"), boxed("5")]
    (vote,) = vote_many([group], grader, min_share=0.5)
    assert (vote.answer, vote.votes, vote.ballots, vote.winner) == ("5", 2, 2, 3)
    assert vote.extracted[:3] == (None, None, None)
    assert not any(vote.in_winner[:3])


def test_answerless_ballots_count_against_the_share(grader):
    group = [boxed("4"), ("I am not sure.", "stop"), ("", "stop"), (None, None)]
    (vote,) = vote_many([group], grader, min_share=0.5)
    # failed requests (no text) are not ballots; an answerless reply is one
    assert (vote.votes, vote.ballots, vote.share) == (1, 2, 0.5) and vote.answer == "4"
    (strict,) = vote_many([group], grader, min_share=0.6)
    assert strict.answer is None and strict.winner is None and strict.reason == "below min_share 1/2"


def test_ties_go_to_the_group_that_answered_first(grader):
    (vote,) = vote_many([[boxed("4"), boxed("3"), boxed("3"), boxed("4")]], grader, min_share=0.0)
    assert vote.answer == "4" and vote.winner == 0
    (vote,) = vote_many([[boxed("3"), boxed("4"), boxed("4"), boxed("3")]], grader, min_share=0.0)
    assert vote.answer == "3" and vote.winner == 0


def test_no_answers_and_empty_groups(grader):
    votes = vote_many([[("nothing here", "stop")], [], [boxed("1", "length")]], grader, min_share=0.0)
    assert [(v.answer, v.reason) for v in votes] == [(None, "no answer"), (None, "no ballots"), (None, "no ballots")]
    with pytest.raises(ValueError, match="min_share"):
        vote_many([], grader, min_share=1.5)


def test_vote_on_samples_marks_the_winning_group(grader):
    rows = []
    for index, (text, finish) in enumerate([boxed("3"), boxed("3"), boxed("0.5"), boxed("\\frac12"), boxed("1/2")]):
        rows.append(
            {"sample_id": f"s{index}", "problem_id": "q", "sample_index": index, "text": text, "finish_reason": finish}
        )
    rows.append({"sample_id": "t0", "problem_id": "r", "sample_index": 0, "text": None, "finish_reason": None})
    table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    voted, votes = vote_on_samples(table, grader, min_share=0.5)
    assert votes["q"].answer == "0.5" and votes["r"].answer is None
    assert voted.column("correct").to_pylist() == [False, False, True, True, True, None]
    assert voted.column("majority_answer").to_pylist() == ["0.5"] * 5 + [None]
    assert voted.column("extracted_answer").to_pylist()[:5] == ["3", "3", "0.5", "\\frac12", "1/2"]
