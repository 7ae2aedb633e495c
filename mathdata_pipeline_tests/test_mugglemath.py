"""MuggleMath: rewrite prompts, reply parsing, question dedup, annotation checks, votes."""

from __future__ import annotations

import builtins
import gzip
import json
import os
import time

import pytest

from mathdata_pipeline.methods.mugglemath import (
    check_calculator_annotations,
    dedup_by_equations,
    dedup_questions,
    equation_sequence,
    majority_answer,
    parse_numbered_questions,
)
from mathdata_pipeline.methods.mugglemath_prompts import (
    PROMPT_VARIANTS,
    REWRITE_TYPES,
    rewrite_messages,
    rewrite_prompts,
)

SEED = (
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he "
    "write a year?"
)


def read_jsonl_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def gsm8k_train(data_root):
    return read_jsonl_gz(data_root / "gsm8k" / "gsm8k_train.jsonl.gz")


# ------------------------------------------------------------------------------ prompts


@pytest.mark.parametrize("variant", PROMPT_VARIANTS)
@pytest.mark.parametrize("rewrite_type", REWRITE_TYPES)
def test_rewrite_messages_shape(rewrite_type, variant):
    messages = rewrite_messages(SEED, rewrite_type, k=4, variant=variant)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert SEED in user and "4 new questions" in user and "numbered list" in user
    assert "do not answer" in user


def test_prompts_differ_by_type_and_variant():
    users = {(t, v): rewrite_messages(SEED, t, variant=v)[1]["content"]
             for t in REWRITE_TYPES for v in PROMPT_VARIANTS}
    assert len(set(users.values())) == len(users)
    assert "LaTeX" in rewrite_messages("Find $x$.", "add_condition", variant="math")[0]["content"]
    assert "1 new question " in rewrite_messages(SEED, "change_numbers", k=1)[1]["content"]


def test_types_can_be_switched_off():
    prompts = rewrite_prompts(SEED, types=["increase_complexity", "change_numbers"], k=2)
    assert list(prompts) == ["change_numbers", "increase_complexity"]
    assert rewrite_prompts(SEED, types=[]) == {}
    with pytest.raises(ValueError, match="unknown rewrite types"):
        rewrite_prompts(SEED, types=["change_question"])
    with pytest.raises(ValueError):
        rewrite_messages(SEED, "change_numbers", variant="aime")
    with pytest.raises(ValueError):
        rewrite_messages(SEED, "change_numbers", k=0)


def test_prompts_fit_a_small_context(gsm8k_train):
    longest = max((row["question"] for row in gsm8k_train), key=len)
    for rewrite_type in REWRITE_TYPES:
        messages = rewrite_messages(longest, rewrite_type, k=5)
        chars = sum(len(m["content"]) for m in messages)
        # ~4 characters per token for English: well under 1k tokens, leaving room for 5 answers.
        assert chars < 3000, (rewrite_type, chars)


# ------------------------------------------------------------------------------ parser

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
        [Q1, "Tom reads 3/4 of a 120-page book on Monday.\n"
             "On Tuesday he reads 10 pages. How many pages are left?"],
    ),
    "bold numbers and type labels": (
        f"**1.** **Changed numbers**: {Q1}\n"
        f"**2.** **Fractions:** {Q2}\n"
        f"**3.** **{Q3}**",
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
        f"1. {Q1}\r\nThe answer is 756.\r\n2. {Q2}\r\nThe final answer is 20 pages.", [Q1, Q2]
    ),
    "question n with solutions": (
        f"Question 1: {Q1}\nSolution: 36*3 = 108 per day, 108*7 = 756.\n\n"
        f"Question 2: {Q2}\nSolution: 120*3/4 = 90, 120-90-10 = 20.",
        [Q1, Q2],
    ),
    "numbered solution steps stay inside the item": (
        f"1. {Q1}\nSolution:\n1. She makes 36 * 3 = 108 per day.\n2. So 108 * 7 = 756.\n"
        f"2. {Q2}",
        [Q1, Q2],
    ),
    "every item numbered 1.": (f"1. {Q1}\n1. {Q2}\n1. {Q3}", [Q1, Q2, Q3]),
    "duplicates and empty items": (
        f"1. {Q1}\n2. {Q1.upper()}\n3.\n4. {Q2}\n5. Question:", [Q1, Q2]
    ),
    "single unnumbered question": (
        f"Sure! Here is a new question with a condition:\n\n{Q3}", [Q3]
    ),
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
            "If $r$ and $s$ are the roots of $x^2 - 7x + 10 = 0$, what is $\\frac{1}{r} + "
            "\\frac{1}{s}$?",
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


@pytest.mark.parametrize("text, failure", [
    ("", "empty"),
    ("   \n", "empty"),
    ("I'm sorry, but I can't help with creating these questions.", "no_numbered_items"),
    ("She makes 24 * 2 = 48 dollars a day, so in 5 days she makes 240 dollars.", "no_numbered_items"),
    ("What would you like to know?\n\nSeed question:\nNatalia sold 48 clips. How many?\n\n"
     "Reply with exactly 2 new questions.", "no_numbered_items"),  # SmolLM2-135M echoing the prompt
    ("1. 756\n2. 20", "no_questions"),
    ("1. Answer: 756\n2. Solution: 20 pages", "no_questions"),
])
def test_parse_failures(text, failure):
    parsed = parse_numbered_questions(text)
    assert parsed.questions == [] and parsed.failure == failure


# ------------------------------------------------------------------------------ question dedup


def test_dedup_exact_and_near():
    seed = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
    candidates = [
        "NATALIA sold clips to 48 of her friends in April,   and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        seed + " Explain.",  # one extra word: Jaccard 27/28
        "Natalia sold clips to 60 of her friends in April, and then she sold a third as many clips in May. How many clips did she sell in total?",
        "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting. How much did she earn?",
        "Weng earns $12 an hour for babysitting! Yesterday, she did 50 minutes of babysitting; how much did she earn?",
        "weng earns $12 an hour for babysitting. yesterday, she did 50 minutes of babysitting. how much did she earn?",
        "  ",
        "What is 2+2?",
        "What is 2+3?",
    ]
    kept, dropped = dedup_questions(candidates, [seed])
    assert kept == [2, 3, 7, 8]
    assert dropped == [(0, "exact_existing"), (1, "near_existing"), (4, "near_candidate"),
                       (5, "exact_candidate"), (6, "empty")]


def test_dedup_threshold_is_configurable():
    base = "one two three four five six seven eight nine ten eleven twelve"
    other = base + " thirteen fourteen"  # 8 of 10 five-grams shared: Jaccard 0.8
    assert dedup_questions([other], [base])[0] == [0]
    assert dedup_questions([other], [base], threshold=0.8)[1] == [(0, "near_existing")]
    with pytest.raises(ValueError):
        dedup_questions([base], threshold=0)


def test_dedup_is_fast_on_real_seeds(gsm8k_train, data_root):
    seeds = [row["question"] for row in gsm8k_train]
    math_questions = [row["problem"] for row in read_jsonl_gz(data_root / "math" / "math_train.jsonl.gz")]
    candidates = ([q.upper() for q in seeds[:1000]] + [q + " Explain." for q in seeds[1000:2000]]
                  + math_questions[:3000])
    start = time.perf_counter()
    kept, dropped = dedup_questions(candidates, seeds)
    elapsed = time.perf_counter() - start
    reasons = [reason for _, reason in dropped]
    assert reasons.count("exact_existing") == 1000
    assert reasons.count("near_existing") >= 990  # one new 5-gram; seeds under 13 words differ more
    assert len(kept) >= 2900  # MATH train has a few repeated problems
    assert elapsed < 10, elapsed


# ------------------------------------------------------------------------------ annotations


def test_real_gsm8k_annotations_pass(gsm8k_train):
    results = [check_calculator_annotations(row["answer"]) for row in gsm8k_train]
    passed = sum(result.ok for result in results)
    assert sum(result.n_checked for result in results) > 20000
    assert passed / len(results) >= 0.99
    misses = [failure for result in results for failure in result.failures]
    # The two upstream misses are `//` typos: <<560//10=56>> and <<180//3=60>>.
    assert len(misses) <= len(results) // 100, misses[:20]


@pytest.mark.parametrize("text", [
    "He pays 3*4=<<3*4=12>>12 dollars.",
    "<<$1,200/4=$300>> and <<300*2=600.>>",
    "<<2.5*4=10.0>> <<.5+.25=0.75>> <<-3+5=2>> <<(2+3)*(4-1)=15>>",
    "<<20%*50=10>> <<2^10=1024>> <<2**3=8>> <<12×3=36>> <<12÷4=3>> <<7−2=5>>",
    "<<10/3=3.333333333>> <<1/3*3=1>> <<0.1+0.2-0.3=0>>",
    "<<2^-1=0.5>> <<-2^2=-4>> <<2^3^2=512>> <<--3=3>>",
    "No annotations at all: 3 * 4 = 12.",
])
def test_valid_annotations(text):
    result = check_calculator_annotations(text)
    assert result.ok, result.failures


@pytest.mark.parametrize("annotation, reason", [
    ("<<48/2=25>>", "48/2 = 24, not 25"),
    ("<<10/3=3.33>>", "not 3.33"),
    ("<<5*5=25=25>>", "exactly one '='"),
    ("<<5*x=25>>", "unexpected character 'x'"),
    ("<<560//10=56>>", "unexpected '/'"),
    ("<<5/0=1>>", "division by zero"),
    ("<<(2+3=5>>", "unbalanced parentheses"),
    ("<<2+=5>>", "incomplete expression"),
    ("<<=5>>", "empty expression"),
    ("<<9^9^9=1>>", "too large"),
    ("<<10**101=1>>", "too large"),
    ("<<(-8)^(1/3)=-2>>", "cannot compute"),
    ("<<" + "(" * 40 + "1" + ")" * 40 + "=1>>", "nested too deeply"),
    ("<<" + "1+" * 150 + "1=151>>", "longer than 200"),
    ("<<5*5=25 apples>>", "unexpected character 'a'"),
])
def test_planted_wrong_annotations(annotation, reason):
    result = check_calculator_annotations(f"So {annotation} in total.\n#### 25")
    assert not result.ok and result.n_checked == 1
    assert len(result.failures) == 1 and reason in result.failures[0]


def test_unclosed_annotation_is_a_failure():
    result = check_calculator_annotations("He has <<3*4=12>>12 and <<5*2=10 apples.")
    assert not result.ok and result.n_checked == 1 and "unbalanced" in result.failures[0]


@pytest.mark.parametrize("annotation", [
    "<<__import__('os').system('touch /tmp/pwned')=0>>",
    "<<eval('2+2')=4>>",
    "<<exec('x=1')=0>>",
    "<<(lambda: 0)()=0>>",
    "<<open('/etc/passwd').read()=0>>",
    "<<().__class__.__bases__[0]=0>>",
    "<<1e400=1>>",
])
def test_injection_attempts_are_failures_and_never_run(annotation, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the checker must never execute code")

    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    result = check_calculator_annotations(annotation)
    assert not result.ok and result.failures


# ------------------------------------------------------------------------------ equations


def test_equation_sequence_from_annotations():
    text = "She earns 12 * 5 = <<12 * 5 = 60.0>>60. Then $1,200 / 60 = <<$1,200/60=$20>>20.\n#### 20"
    assert equation_sequence(text) == ("12*5=60", "1200/60=20")


def test_equation_sequence_from_prose():
    text = ("First, 48 / 2 = 24 clips in May. Together 48 + 24 = 72 clips.\n"
            "So x = 72 and the answer is 72. In 2023 = a year. (3 + 4) * 2 = 14. 3 x 4 = 12.")
    assert equation_sequence(text) == ("48/2=24", "48+24=72", "(3+4)*2=14")


def test_dedup_by_equations():
    responses = [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72.\n#### 72",
        "In May she sold half: <<48 / 2 = 24>>24. Total <<48+24=72.0>>72 clips.\n#### 72",
        "Total is <<48*1.5=72>>72.\n#### 72",
        "In May 48 / 2 = 24, so in total 48 + 24 = 72.",
        "May: 48 / 2 = 24. Altogether: 48 + 24 = 72. The answer is 72.",
        "The answer is 72.",
        "The answer is   72.",
        "I think it is 72.",
    ]
    assert dedup_by_equations(responses) == [0, 2, 5, 7]  # 1, 3, 4 take the steps of 0


# ------------------------------------------------------------------------------ majority vote


def test_majority_vote_basic_and_numeric_equality():
    vote = majority_answer(["18", "18.0", "$18", "\\frac{36}{2}", "20"])
    assert (vote.answer, vote.votes, vote.agreement) == ("18", 4, 0.8)
    assert majority_answer(["0.5", "\\frac{1}{2}", "1/2", "2"]).answer == "0.5"
    assert majority_answer(["\\sqrt{2}", "\\sqrt2", "2"]).answer == "\\sqrt{2}"


def test_majority_vote_none_counts_in_denominator():
    vote = majority_answer(["7", None, None, ""])
    assert vote == majority_answer(["7", None, None, "  "])
    assert (vote.answer, vote.votes, vote.agreement) == (None, 1, 0.25)
    assert majority_answer(["7", "7", None, None]).answer == "7"  # 0.5 >= 0.5
    assert majority_answer([None, None]) == majority_answer([])
    assert majority_answer([]).answer is None and majority_answer([]).agreement == 0.0


def test_majority_vote_ties_and_threshold():
    tie = majority_answer(["3", "3", "4", "4"])
    assert tie.answer is None and tie.votes == 2 and tie.agreement == 0.5
    assert majority_answer(["3", "3", "4", "5", "6"]).answer is None
    assert majority_answer(["3", "3", "4", "5", "6"], min_agreement=0.4).answer == "3"
    assert majority_answer(["3", "3", "4"], min_agreement=0.6).answer == "3"
    assert majority_answer(["3", "3", "4"], min_agreement=0.7).answer is None
    assert majority_answer(["3", "4", "5"], min_agreement=0).answer is None  # three-way tie
