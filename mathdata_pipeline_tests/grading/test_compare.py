"""Comparing answers as mathematical objects, in process (no math-verify): the shapes of answers and
the verdicts the cheap checks reach (True / False, or None when the symbolic check must decide)."""

from __future__ import annotations

import pytest

from mathdata_pipeline.grading import Tolerance, clean_answer
from mathdata_pipeline.grading.compare import answers_equal, cheap_leaf
from mathdata_pipeline.grading.structure import (
    EXPR,
    INTERVAL,
    LIST,
    MATRIX,
    RELATION,
    SET,
    TEXT,
    TUPLE,
    UNION,
    is_name,
    parse_shape,
    relation_interval,
    relation_value,
)

LEAF = cheap_leaf(Tolerance())


def equal(predicted: str, reference: str) -> bool | None:
    return answers_equal(
        clean_answer(predicted, keep_assignment=True), clean_answer(reference, keep_assignment=True), LEAF
    )


@pytest.mark.parametrize(
    ("answer", "kind", "items"),
    [
        ("1, 2, 3", LIST, 3),
        ("19, 46, and 82", LIST, 3),
        ("p=5,q=2;p=7,q=2", LIST, 2),
        ("(11,7)or(7,11)", LIST, 2),
        ("1 \\pm \\sqrt{19}", LIST, 2),
        ("(0,1) \\cup [2,3]", UNION, 2),
        ("\\{3, 1, 2\\}", SET, 3),
        ("(3, \\frac{\\pi}{2})", TUPLE, 2),
        ("\\langle 1, 2, 3 \\rangle", TUPLE, 3),
        ("[1, 2, 3]", TUPLE, 3),
        ("[0, 1)", INTERVAL, 2),
        ("(-\\infty, 5]", INTERVAL, 2),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", MATRIX, 4),
        ("[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}]", MATRIX, 4),
        ("x = 5 + 5 + 1 = 11", RELATION, 3),
        ("-2 \\leq x < 7", RELATION, 3),
        ("\\text{Even}", TEXT, 0),
        ("((5))", EXPR, 0),
        ("x^2 + 1", EXPR, 0),
        ("\\frac{(1,2)}{3}", EXPR, 0),
    ],
)
def test_shapes(answer, kind, items):
    shape = parse_shape(clean_answer(answer, keep_assignment=True))
    assert (shape.kind, len(shape.items)) == (kind, items)


def test_names_values_and_intervals_of_relations():
    assert [is_name(text) for text in ("x", "a_{n+1}", "f(3)", "\\angle ABC", "(p, q)", "\\frac{NO}{BO}")] == [True] * 6
    assert [is_name(text) for text in ("2x", "x^2", "a + b", "-x", "\\pi", "12")] == [False] * 6

    def value(text, **options):
        found = relation_value(parse_shape(clean_answer(text, keep_assignment=True)), **options)
        return found.text if found is not None else None

    assert value("x = 5 + 5 + 1 = 7 = 11") == "11"
    assert value("\\frac{1}{2} \\times 378 = 189") == "189"
    assert value("x = \\frac{1}{3} \\approx 0.33") == "\\frac{1}{3}"
    assert value("x \\approx 11") == "11"
    assert value("24^{50} - 15^{50} \\equiv 2^{50} - 2^{50} \\equiv 0 \\pmod{13}") == "0"
    assert value("2x + 4y = 3") is None and value("7 = 11a + c") is None
    assert value("a + b = -3 + 3 = 0", as_response=True) == "0"
    assert value("x + y = 2", as_response=True) == "2"
    assert value("2x - y + 2z - 18 = 0", as_response=True) is None

    def interval(text):
        found = relation_interval(parse_shape(clean_answer(text, keep_assignment=True)))
        return (found.kind, found.text, found.closed) if found is not None else None

    assert interval("x > 5") == (INTERVAL, "(5, \\infty)", (False, False))
    assert interval("5 \\geq x") == (INTERVAL, "(-\\infty, 5]", (False, True))
    assert interval("-2 \\le x < 7") == (INTERVAL, "[-2, 7)", (True, False))
    assert interval("7 > a \\geq -793") == (INTERVAL, "[-793, 7)", (True, False))
    assert interval("x \\in [0, 1)")[1] == "[0, 1)"
    assert interval("x < y") is None and interval("x \\neq 3") is None


@pytest.mark.parametrize(
    ("predicted", "reference", "verdict"),
    [
        # fractions in every LaTeX spelling and mixed numbers
        ("\\frac13", "1/3", True),
        ("\\frac3{3}", "1", True),
        ("\\cfrac{1}{3}", "\\frac{1}{3}", True),
        ("-\\frac{10}{9}", "-10/9", True),
        ("2\\frac{1}{2}", "\\frac{5}{2}", True),
        ("\\frac{1}{3}", "\\frac{1}{4}", False),
        # intervals and unions
        ("[0,1)", "[0, 1)", True),
        ("[0,1)", "[0,1]", False),
        ("(2,\\infty)\\cup(-\\infty,-2)", "(-\\infty,-2) \\cup (2, \\infty)", True),
        ("[-\\tfrac32,-1] \\cup [1,\\tfrac32]", "[-\\frac{3}{2}, -1] \\cup [1, \\frac{3}{2}]", True),
        ("(1, +\\infty)", "(1, \\infty)", True),
        ("(0, 5)", "(0, \\infty)", False),
        # sets, tuples and lists
        ("\\{3, 1, 2\\}", "\\{1, 2, 3\\}", True),
        ("\\{1, 2\\}", "\\{1, 2, 3\\}", False),
        ("\\{1, 2, 2\\}", "\\{2, 1\\}", True),
        ("(3, 2)", "(2, 3)", False),
        ("(1, 4.5)", "(1, \\frac{9}{2})", True),
        ("1, 3", "(1, 3)", True),
        ("1, 3", "(3, 1)", False),  # the reference is ordered
        ("(3, 1)", "1, 3", True),  # the reference is not
        ("-2, 1", "1, -2", True),
        ("(5,2),(7,2)", "p=5,q=2;p=7,q=2", True),
        ("(7,11),\\ (11,7)", "(11,7)or(7,11)", True),
        ("\\{-2021, 2021\\}", "\\pm 2021", True),
        ("19, 46, \\text{ and } 82", "19, 46, and 82", True),
        ("1, 2", "2", False),
        ("\\frac{3}{2}, \\frac32", "1.5", True),  # one answer written twice
        # matrices
        ("\\begin{bmatrix}0 & 0 \\\\ 0 & 0\\end{bmatrix}", "\\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix}", True),
        (
            "\\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right]",
            "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}",
            True,
        ),
        ("\\begin{pmatrix} 0.5 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} \\frac12 \\\\ 2 \\end{pmatrix}", True),
        ("\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}", "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", False),
        ("\\begin{pmatrix}1 & 2 & 3 & 4\\end{pmatrix}", "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", False),
        ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "(1, 2)", False),
        # inequalities and the intervals they describe
        ("0<f(x)<1", "(0,1)", True),
        ("(-793, 10)", "-793 < a < 10", True),
        ("x \\in [-2,7]", "-2 \\le x \\le 7", True),
        ("-2 \\le x \\le 7", "x \\in [-2,7]", True),
        ("x \\geq 5", "[5, \\infty)", True),
        ("5 \\geq x", "x \\leq 5", True),
        ("x > 5", "x < 5", False),
        ("x \\geq 5", "x > 5", False),
        ("x < -1 \\text{ or } x > 1", "(-\\infty, -1) \\cup (1, \\infty)", True),
        ("x \\gt 5", "x > 5", True),
        ("x != 3", "x \\neq 3", True),
        # relations: a stated value by its value, an equation only against an equation
        ("x = 2", "2", True),
        ("k = \\frac{1}{3}", "1/3", True),
        ("2", "x = 2", True),
        ("x = 5+5+1 = 7 = 11", "x = 11", True),
        ("z = 3+3 = 2", "z = 1 + 1 = 2", True),
        ("(p,q)=(3,2)", "(3,2)", True),
        ("V_{1}:V_{2}=11:21", "11:21", True),
        ("\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", "\\frac{1}{\\sqrt{6}}", True),
        ("a+b=-3+3=0", "0", True),
        ("2 \\times 2! \\times 3! = 24", "24", True),
        ("11a + c", "7 = 11a + c", False),
        ("1", "2x + z = 1", False),
        ("2x - y + 2z - 18 = 0", "0", False),
        ("x \\approx 11", "11", True),
        ("x = 1/3 \\approx 0.3", "1/3", True),
        ("p=-1,p=\\frac{15}{8}", "p = -1 \\text{ and } p = \\dfrac{15}{8}", True),
        ("n = 28", "(N+7)+(N-7)+(N/7)=60 \\Rightarrow N=28", True),
        ("5n \\equiv 10 \\equiv 1 \\pmod{3}", "1", True),
        # words in and out of \text{}
        ("odd", "\\text{odd}", True),
        ("Evelyn", "\\text{Evelyn}", True),
        ("E", "\\text{(E)}", True),
        ("\\text{no}", "\\text{yes}", False),
        ("\\text{odd}", "5", False),
        # thousands and decimal separators
        ("1 000", "1000", True),
        ("1000,99", "1000.99", True),
        ("2,74", "2.74", True),
        ("1.22", "1,22", True),
        ("0.111", "0,111", True),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100", True),
        ("14 {, }916", "14916", True),
        ("32, 349", "32349", False),
        ("1,5", "15", False),
        # formulas the cheap checks cannot decide: the symbolic check will
        ("x^2+2x+1", "(x+1)^2", None),
        ("(3, \\pi/2)", "(3, \\frac{\\pi}{2})", None),
    ],
)
def test_answers_equal(predicted, reference, verdict):
    assert equal(predicted, reference) is verdict


def test_structure_is_bounded():
    deep = "(" * 5_000 + "1" + ")" * 5_000
    assert parse_shape(deep).kind == EXPR
    wide = ", ".join(str(number) for number in range(500))
    assert parse_shape(wide).kind == EXPR  # more than 64 items is compared as one formula
    assert equal(wide, wide) is True
    assert parse_shape("(1, 2]]").kind == EXPR  # unbalanced brackets: no structure
