"""Answer extraction in priority order: boxes, `####`, answer phrases, the last math span, the last
number; and the step each answer was found by."""

from __future__ import annotations

import time

import pytest

from mathdata_pipeline.grading import extract_answer, extract_with_step, final_boxes, reference_answer_from_solution


@pytest.mark.parametrize(
    ("text", "answer", "step"),
    [
        # one box
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "boxed"),
        ("The answer is $\\boxed{7}$, not $8$.", "7", "boxed"),
        # several boxes that together form the answer
        ("$t = \\boxed{\\frac{1}{3}}$ or $t = \\boxed{-\\frac{5}{2}}$.", "\\frac{1}{3}, -\\frac{5}{2}", "boxes"),
        ("roots: \\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", "-2, 1", "boxes"),
        ("\\( y_1 = \\boxed{x+1} \\) and \\( y_2 = \\boxed{x-1} \\)", "x+1, x-1", "boxes"),
        ("\\boxed{(2, 1)}, \\boxed{(1, 2)}", "(2, 1), (1, 2)", "boxes"),
        ("so \\boxed{4} and \\boxed{4}", "4", "boxed"),  # the same box twice is one answer
        # boxes with words between them are separate results: the last one is the answer
        ("first \\boxed{1}, then we add two to get \\boxed{3}.", "3", "boxed"),
        ("We get \\boxed{12}.\n\n**Final Answer**\n\\boxed{12}", "12", "boxed"),
        # a "final answer" phrase after boxed intermediate results wins
        (
            "so $a = \\boxed{200}$ and $b = \\boxed{255}$.\nFinal Answer: The final answer is $10,455$.",
            "10,455",
            "marker",
        ),
        # GSM8K
        ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72", "hashes"),
        # answer phrases
        ("Therefore, the answer is $\\frac{3}{4}$. Done.", "\\frac{3}{4}", "marker"),
        ("The final answer is 3.5. I hope it is correct.", "3.5", "marker"),
        ("**Final Answer:** **12**", "12", "marker"),
        ("So the answers are $2$ and $5$ in some order.", "2, 5", "marker"),
        ("The answer would be \\(x \\in (-6, 10)\\).", "x \\in (-6, 10)", "marker"),
        ("Final Answer: The largest $n$ is 34.", "34", "marker"),
        ("**Final Answer**\n\\[ \\frac{\\pi}{4} \\]", "\\frac{\\pi}{4}", "marker"),
        ("Answer $ 9 $", "9", "marker"),
        ("#### Answer\n\\[ 9 \\]", "9", "marker"),
        ("The answer is: the point $(7, 6)$ in the plane.", "(7, 6)", "marker"),
        ('Final Answer: The final answer is \\"$12 $ and $13 $\\". I hope', "12, 13", "marker"),
        # filler words between the phrase and the value; a GSM8K-style computation gives its result
        ("The answer is therefore 3.", "3", "marker"),
        ("So the answer is simply $5$.", "5", "marker"),
        ("The answer is 15 gallons * 8 pints / gallon = 120 pints.", "120", "marker"),
        # the last LaTeX math span
        ("so the probability is $\\frac{1}{3}$.", "\\frac{1}{3}", "math_span"),
        ("Hence $k = \\frac{1}{3}$", "k = \\frac{1}{3}", "math_span"),
        ("The vertices form \\((3, 2)\\).", "(3, 2)", "math_span"),
        ("Thus\n\\[\n11:21\n\\]\n", "11:21", "math_span"),
        ("\\begin{align*}\nf(2) &= 4 + 4 \\\\\n&= 8. \\label{last}\n\\end{align*}", "8.", "math_span"),
        ("\\[ \\begin{aligned} x &= 29^2 + 29 - 1\\\\ &= 869. \\end{aligned} \\]", "869.", "math_span"),
        # spans that end the text as a list ("and" / "or", commas before) are one answer
        ("The solutions are $(-2, 18)$ and $(8, 38)$.", "(-2, 18), (8, 38)", "math_span"),
        ("It can be $1$, $2$, or $3$.", "1, 2, 3", "math_span"),
        ("We have $x=3$ and then $y=4$", "y=4", "math_span"),  # words between: only the last
        ("\\begin{align*} a &= 1 + 1 \\\\\n\\quad &= 2 \\end{align*}", "2", "math_span"),
        ("-\\frac{10}{9}", "-\\frac{10}{9}", "math_span"),  # one line of LaTeX without delimiters
        # a number after the last formula: the writer moved on to plain text
        ("We know $d = \\frac{90}{n}$. So there are 12 sequences. I hope it is correct.", "12", "last_number"),
        # the last number
        ("She has 1,234 apples and buys 5,000 more, 6,234 in all", "6234", "last_number"),
        ("Half: 240/2 = 120.\nIt takes 120/24 = <<120/24=5>>5 hours to read 120 pages.", "5", "last_number"),
        ("1 000", "1 000", "last_number"),
        ("Soucis : 2,74 $ a..", "2,74", "last_number"),
        ("the pairs (2,3) and 1,2,3", "3", "last_number"),
        ("AZYUK2A", None, None),
        ("", None, None),
    ],
)
def test_extract_with_step(text, answer, step):
    assert extract_with_step(text) == (answer, step)


def test_extract_answer_options():
    text = "$t = \\boxed{1}$ or $t = \\boxed{2}$"
    assert extract_answer(text) == "1, 2"
    assert extract_answer(text, boxes="last") == "2"
    assert extract_answer("I think it is 42 apples", fallback_last_number=False) is None
    # Without the last-number rule a formula followed by numbers is still the answer.
    assert extract_answer("So $x = 3$. Step 2 is done", fallback_last_number=False) == "x = 3"


def test_what_is_ignored_before_extraction():
    # A chat model that runs on into a new turn: only the first turn counts.
    assert extract_answer("The answer is 5.<|im_end|>\n<|im_start|>user\nThe answer is 6.") == "5"
    # Asymptote diagrams hold coordinates, not answers.
    assert extract_answer("The area is $18$.\n[asy]\ndraw((0,0)--(0.2,3));\n[/asy]") == "18"
    assert extract_answer("Total: 7\n[asy]\nlabel((1,2.5));") == "7"


@pytest.mark.parametrize(
    "text",
    [
        "He paid $5 and $6 for two books",  # currency, not a formula
        "It costs $10 for the big book and $",  # a span that reads as prose
        "Answer $ \n 9 \n $ later",  # an inline span does not cross lines
    ],
)
def test_dollars_that_are_not_formulas(text):
    answer, step = extract_with_step(text, fallback_last_number=False)
    assert step != "math_span", answer


def test_final_boxes_and_references():
    assert final_boxes("no box") == []
    assert final_boxes("\\boxed{} then \\boxed{3") == []
    assert final_boxes("outer \\boxed{x = \\boxed{3}} end") == ["x = \\boxed{3}"]
    solution = "Then $t = \\boxed{\\frac{1}{3}}$ or $t = \\boxed{-\\frac{5}{2}}$."
    assert reference_answer_from_solution(solution, "boxed") == "\\frac{1}{3}, -\\frac{5}{2}"


def test_extraction_is_linear_on_hostile_text():
    hostile = [
        "\\[" * 50_000,
        "$" * 100_001,
        "\\(" + "a" * 100_000,
        "\\begin{align*}" * 20_000,
        "the answer is " * 20_000,
        "\\boxed{1} and " * 20_000,
    ]
    for text in hostile:
        start = time.perf_counter()
        extract_with_step(text)
        assert time.perf_counter() - start < 2.0, text[:20]
