"""Refusing an answer that only restates the question: "Compute $\\sin 0^\\circ$." answered
`\\sin 0^\\circ` is not an answer, even though `\\sin 0^\\circ` evaluates to the reference 0.

The rule (parse-only; nothing of the answer is evaluated): an extracted answer is a restatement
when all of these hold, compared after `normalize_answer` and then without grouping and degree
marks (parentheses, braces, `\\left`/`\\right`, `^\\circ`, trailing punctuation), so `\\sin(0^\\circ)` restates
`\\sin 0^\\circ`:

1. it is not a plain number (`parse_number` reads no value from it: `0`, `-3`, `0.5`,
   `\\frac{1}{2}` are numbers, so a number is never refused here, whatever the question says);
2. it equals an expression the question states: the content of one of its math spans
   (`$...$`, `\\(...\\)`, ...), or one side of an `=` inside such a span;
3. the reference answer is none of those expressions (when it is, the question asks to pick
   among given expressions, e.g. "Which is larger, $\\sqrt{2}$ or $1.5$?", and restating the
   right one is the answer).

So "What is $\\frac{1}{2}$ of 4?" answered `2` is graded as usual, answered `\\frac{1}{2}` is
graded as usual too (a number: the comparison says mismatch), and "If $f(x) = 3x+1$, find
$f(2)$." answered `f(2)` or `3x+1` is refused. A question without math spans refuses nothing.
"""

from __future__ import annotations

import re

from .normalize import normalize_answer
from .numeric import parse_number
from .spans import math_spans

# Left out of the compared form: grouping, sizing and degree marks.
_LOOSE = re.compile(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\^\{?\\circ\}?|[(){}]|[.,;:]+$")


def loose_form(expression: str) -> str:
    """`normalize_answer(expression)` without parentheses, braces, `\\left`, `\\right`,
    `^\\circ` and trailing punctuation (the form the rule compares)."""
    return _LOOSE.sub("", normalize_answer(expression))


def question_expressions(question: str) -> set[str]:
    """The expressions `question` states, in `loose_form`: each math span's content and, for a
    span with `=`, each side of it. Empty strings are left out."""
    expressions: set[str] = set()
    for span in math_spans(question):
        parts = [span, *span.split("=")] if "=" in span else [span]
        expressions.update(loose for part in parts if (loose := loose_form(part)))
    return expressions


def restates_question(extracted: str, reference: str, question: str) -> bool:
    """Whether the answer `extracted` only restates an expression of `question` (the rule of the
    module docstring). Inputs: the extracted answer, the reference answer and the question text.
    Output: True when the answer must be refused (grader reason "restated")."""
    normalized = normalize_answer(extracted)
    if not normalized or parse_number(normalized) is not None:
        return False
    stated = question_expressions(question)
    return loose_form(extracted) in stated and loose_form(reference) not in stated
