"""The restatement rule: an answer that only restates an expression of the question is refused,
numbers and answers picked among the question's own expressions are not."""

from __future__ import annotations

import pytest

from mathdata_pipeline.grading import Grader, grade
from mathdata_pipeline.grading.restatement import question_expressions, restates_question

SIN = "Compute $\\sin 0^\\circ$."


@pytest.mark.parametrize(
    "extracted, reference, question, refused",
    [
        ("\\sin 0^\\circ", "0", SIN, True),  # the demo's false positive
        ("\\sin 0^{\\circ}", "0", SIN, True),  # spelled differently, same after normalization
        ("\\sin\\left(0^\\circ\\right)", "0", SIN, True),  # grouping and degree marks do not count
        ("\\sin 0^\\circ = 0", "0", SIN, False),  # states a value: graded as usual
        ("1+2\\cdot3", "7", "Find $1+2\\cdot3.$", True),  # the span's final period does not count
        ("0", "0", SIN, False),  # a number is an answer
        ("2", "2", "What is $\\frac{1}{2}$ of 4?", False),
        ("\\frac{1}{2}", "2", "What is $\\frac{1}{2}$ of 4?", False),  # a number: left to the comparison
        ("f(2)", "7", "If $f(x) = 3x+1$, find $f(2)$.", True),
        ("3x+1", "7", "If $f(x) = 3x+1$, find $f(2)$.", True),  # one side of an `=`
        ("\\sqrt{2}", "\\sqrt{2}", "Which is larger, $\\sqrt{2}$ or $1.5$?", False),  # picked among given ones
        ("2\\sqrt{2}", "2\\sqrt{2}", "Simplify $\\sqrt{8}$.", False),  # a new expression
        ("2+3", "5", "What is 2+3?", False),  # no math span: nothing to compare with
    ],
)
def test_restates_question(extracted, reference, question, refused):
    assert restates_question(extracted, reference, question) is refused


def test_question_expressions_are_normalized_spans_and_sides():
    assert question_expressions("Let $y = \\dfrac12$ and $\\sin 30^\\circ$.") == {"\\frac12", "y", "\\sin30"}


def test_grade_refuses_a_restatement_only_when_it_knows_the_question():
    response = "We have $\\sin 0^\\circ = 1$, so the answer is $\\boxed{\\sin 0^\\circ}$."
    assert grade(response, "0", question=SIN).to_dict() == {
        "correct": False,
        "extracted": "\\sin 0^\\circ",
        "reason": "restated",
    }
    assert grade("so the answer is $\\boxed{0}$.", "0", question=SIN).reason == "exact"
    assert grade(response, "0").reason == "symbolic"  # without the question: math-verify says 0 == 0


def test_grader_takes_the_question_from_a_tuple_or_a_dict():
    response = "The answer is $\\boxed{\\sin 0^\\circ}$."
    with Grader() as grader:  # decided without the worker pool: no process starts
        verdicts = grader.grade_many(
            [
                (response, "0", "stop", SIN),
                {"response": response, "reference": "0", "question": SIN},
                ("The answer is $\\boxed{2}$.", "2", None, "What is $\\frac{1}{2}$ of 4?"),
            ]
        )
        assert [v.reason for v in verdicts] == ["restated", "restated", "exact"]
        assert grader._pool is None
