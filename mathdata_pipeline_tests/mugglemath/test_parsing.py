"""The question parser on realistic, truncated and failing replies."""

from __future__ import annotations

import pytest

from mathdata_pipeline.mugglemath.parsing import parse_numbered_questions, parse_question_solution_pairs

SEED = "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?"


Q1 = "A baker makes 36 muffins a day and sells them for $3 each. How much does she make in 7 days?"
Q2 = "Tom reads 3/4 of a 120-page book on Monday and 10 pages on Tuesday. How many pages are left?"
Q3 = "If it rains, a bus carries 20% fewer than its usual 45 riders. How many ride on a rainy day?"

PARSER_CASES = {
    "clean list": (f"1. {Q1}\n2. {Q2}\n3. {Q3}", [Q1, Q2, Q3]),
    "preamble and chatter": (
        "Sure! Here are 3 new questions that change specific numbers:\n\n"
        f"1. {Q1}\n\n2. {Q2}\n\n3. {Q3}\n\n"
        "I hope these help! Let me know if you would like the solutions.",
        [Q1, Q2, Q3],
    ),
    "paren style, multi-line item": (
        f"1) {Q1}\n2) Tom reads 3/4 of a 120-page book on Monday.\n"
        "On Tuesday he reads 10 pages. How many pages are left?",
        [Q1, "Tom reads 3/4 of a 120-page book on Monday.\nOn Tuesday he reads 10 pages. How many pages are left?"],
    ),
    "bold numbers and type labels": (
        f"**1.** **Changed numbers**: {Q1}\n**2.** **Fractions:** {Q2}\n**3.** **{Q3}**",
        [Q1, Q2, Q3],
    ),
    "markdown headings": (
        f"### Question 1:\n{Q1}\n\n### Question 2:\n{Q2}",
        [Q1, Q2],
    ),
    "answers interleaved": (
        f"1. {Q1}\nAnswer: 36 * 3 * 7 = 756\n\n"
        f"2. {Q2} (Answer: 20 pages)\n\n"
        f"3. {Q3}\n**Solution:** 45 * 0.8 = 36\n#### 36",
        [Q1, Q2, Q3],
    ),
    "answer sentences, Windows line ends": (
        f"1. {Q1}\r\nThe answer is 756.\r\n2. {Q2}\r\nThe final answer is 20 pages.",
        [Q1, Q2],
    ),
    "question n with solutions": (
        f"Question 1: {Q1}\nSolution: 36*3 = 108 per day, 108*7 = 756.\n\n"
        f"Question 2: {Q2}\nSolution: 120*3/4 = 90, 120-90-10 = 20.",
        [Q1, Q2],
    ),
    "numbered solution steps stay inside the item": (
        f"1. {Q1}\nSolution:\n1. She makes 36 * 3 = 108 per day.\n2. So 108 * 7 = 756.\n2. {Q2}",
        [Q1, Q2],
    ),
    "every item numbered 1.": (f"1. {Q1}\n1. {Q2}\n1. {Q3}", [Q1, Q2, Q3]),
    "duplicates and empty items": (f"1. {Q1}\n2. {Q1.upper()}\n3.\n4. {Q2}\n5. Question:", [Q1, Q2]),
    "single unnumbered question": (f"Sure! Here is a new question with a condition:\n\n{Q3}", [Q3]),
    "single question inline preamble": (f"Here is the new question: {Q3}", [Q3]),
    "decimal at line start is not an item": (
        f"1. A rope is cut into two pieces.\n2.5 meters of it is red, the rest blue. {Q1}",
        ["A rope is cut into two pieces.\n2.5 meters of it is red, the rest blue. " + Q1],
    ),
    "LaTeX-heavy MATH rewrite": (
        "Here are two variations of the problem:\n\n"
        "1. Let \\[f(x) = \\left\\{\n\\begin{array}{cl} ax+5, &\\text{ if }x>3, \\\\\n"
        "x-2 &\\text{ if } x \\le 3.\n\\end{array}\n\\right.\\]Find $a$ if $f$ is continuous.\n"
        "2. If $r$ and $s$ are the roots of $x^2 - 7x + 10 = 0$, what is $\\frac{1}{r} + "
        "\\frac{1}{s}$?\n\n**Answer:** $\\frac{7}{10}$",
        [
            "Let \\[f(x) = \\left\\{\n\\begin{array}{cl} ax+5, &\\text{ if }x>3, \\\\\n"
            "x-2 &\\text{ if } x \\le 3.\n\\end{array}\n\\right.\\]Find $a$ if $f$ is continuous.",
            "If $r$ and $s$ are the roots of $x^2 - 7x + 10 = 0$, what is $\\frac{1}{r} + \\frac{1}{s}$?",
        ],
    ),
}


@pytest.mark.parametrize("name", list(PARSER_CASES))
def test_parse_realistic_replies(name):
    text, questions = PARSER_CASES[name]
    parsed = parse_numbered_questions(text)
    assert parsed.failure is None
    assert parsed.questions == questions


def test_parse_truncated_reply_drops_the_last_item():
    text = f"1. {Q1}\n2. {Q2}\n3. If it rains, a bus carries 20% fewer than its"
    parsed = parse_numbered_questions(text, finish_reason="length")
    assert parsed.questions == [Q1, Q2]
    assert parse_numbered_questions("1. If it rains, a bus", finish_reason="length").failure == "truncated"
    assert parse_numbered_questions(f"1. {Q1}\n2. {Q2}", finish_reason="stop").questions == [Q1, Q2]


def test_parse_expected_caps_the_count():
    text = f"1. {Q1}\n2. {Q2}\n3. {Q3}"
    assert parse_numbered_questions(text, expected=2).questions == [Q1, Q2]
    assert parse_numbered_questions(text, expected=5).questions == [Q1, Q2, Q3]


@pytest.mark.parametrize(
    "text, failure",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I'm sorry, but I can't help with creating these questions.", "no_numbered_items"),
        ("She makes 24 * 2 = 48 dollars a day, so in 5 days she makes 240 dollars.", "no_numbered_items"),
        (
            "What would you like to know?\n\nSeed question:\nNatalia sold 48 clips. How many?\n\n"
            "Reply with exactly 2 new questions.",
            "no_numbered_items",
        ),  # SmolLM2-135M echoing the prompt
        ("1. 756\n2. 20", "no_questions"),
        ("1. Answer: 756\n2. Solution: 20 pages", "no_questions"),
    ],
)
def test_parse_failures(text, failure):
    parsed = parse_numbered_questions(text)
    assert parsed.questions == [] and parsed.failure == failure


AUGMATH_REPLY = (
    "Here are the variations.\n\n"
    "Question1: What is the sum of the roots of $x^2 - 9x + 14 = 0$?\n"
    "Solution1: By Vieta's formulas the sum is $9$, so the answer is $\\boxed{9}$. ##end1\n\n"
    "**Question 2:** If $r$ and $s$ are the roots of $x^2 - 5x + 6 = 0$, what is $rs$?\n"
    "**Solution 2:** The product of the roots is $6$.\nThe answer is $\\boxed{6}$.\n##end2\n\n"
    "Question3: A question without its solution?\n\n"
    "Question4: What is $r^3 + s^3$ for the roots of $x^2 - 5x + 6 = 0$?\n"
    "Solution4: $r^3 + s^3 = (r+s)^3 - 3rs(r+s) = 125 - 90"
)


def test_augmath_pairs_are_parsed_and_a_cut_off_pair_is_dropped():
    parsed = parse_question_solution_pairs(AUGMATH_REPLY, expected=5, finish_reason="length")
    assert [q for q, _ in parsed.pairs] == [
        "What is the sum of the roots of $x^2 - 9x + 14 = 0$?",
        "If $r$ and $s$ are the roots of $x^2 - 5x + 6 = 0$, what is $rs$?",
    ]
    assert parsed.pairs[1][1] == "The product of the roots is $6$.\nThe answer is $\\boxed{6}$."
    assert parsed.failure is None
    finished = parse_question_solution_pairs(AUGMATH_REPLY, finish_reason="stop")
    assert len(finished.pairs) == 3 and finished.pairs[2][1].endswith("125 - 90")
    assert len(parse_question_solution_pairs(AUGMATH_REPLY, expected=1).pairs) == 1


def test_augmath_replies_without_pairs_say_why():
    assert parse_question_solution_pairs("  ").failure == "empty"
    assert parse_question_solution_pairs("1. A new question?\n2. Another one?").failure == "no_pairs"
    cut = "Question1: What is $2+2$?\nSolution1: It is"
    assert parse_question_solution_pairs(cut, finish_reason="length").failure == "truncated"
    assert parse_question_solution_pairs(cut, finish_reason="stop").pairs == [("What is $2+2$?", "It is")]
