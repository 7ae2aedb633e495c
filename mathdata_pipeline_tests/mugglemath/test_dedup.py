"""Question dedup (exact and near) and response dedup by equation sequence."""

from __future__ import annotations

import time

import pytest

from mathdata_pipeline.mugglemath.dedup import dedup_by_equations, dedup_questions, equation_sequence
from mathdata_pipeline_tests.conftest import read_jsonl_gz

SEED = "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?"


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
    assert dropped == [
        (0, "exact_existing"),
        (1, "near_existing"),
        (4, "near_candidate"),
        (5, "exact_candidate"),
        (6, "empty"),
    ]


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
    candidates = [q.upper() for q in seeds[:1000]] + [q + " Explain." for q in seeds[1000:2000]] + math_questions[:3000]
    start = time.perf_counter()
    kept, dropped = dedup_questions(candidates, seeds)
    elapsed = time.perf_counter() - start
    reasons = [reason for _, reason in dropped]
    assert reasons.count("exact_existing") == 1000
    assert reasons.count("near_existing") >= 990  # one new 5-gram; seeds under 13 words differ more
    assert len(kept) >= 2900  # MATH train has a few repeated problems
    assert elapsed < 10, elapsed


def test_equation_sequence_from_annotations():
    text = "She earns 12 * 5 = <<12 * 5 = 60.0>>60. Then $1,200 / 60 = <<$1,200/60=$20>>20.\n#### 20"
    assert equation_sequence(text) == ("12*5=60", "1200/60=20")


def test_equation_sequence_from_prose():
    text = (
        "First, 48 / 2 = 24 clips in May. Together 48 + 24 = 72 clips.\n"
        "So x = 72 and the answer is 72. In 2023 = a year. (3 + 4) * 2 = 14. 3 x 4 = 12."
    )
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
    # 1, 3, 4 take the steps of 0 and are no farther from the other kept paths; 6 repeats 5's text
    assert dedup_by_equations(responses) == [0, 2, 5, 7]


def test_dedup_by_equations_keeps_the_farthest_path_of_a_sequence():
    """RFT's rule: a duplicate replaces the kept path when its edit distance to the other kept
    paths is larger; with no other kept path yet, the first stays."""
    near = "Half of 48 is <<48/2=24>>24, and 48+24=<<48+24=72>>72.\n#### 72"
    other = "Total is <<48*1.5=72>>72.\n#### 72"
    far = (
        "We work it out carefully step by step: in May Natalia sold only half as many, <<48/2=24>>24 clips, "
        "so across the two months together she sold <<48+24=72>>72 clips in all.\n#### 72"
    )
    close = "Half of 48 is <<48/2=24>>24, and 48+24=<<48+24=72>>72 clips.\n#### 72"
    assert dedup_by_equations([near, far]) == [0]  # nothing else kept yet: the first one stays
    assert dedup_by_equations([near, other, far]) == [1, 2]  # far replaces near
    assert dedup_by_equations([near, other, far, close]) == [1, 2]  # close is nearer to `other` than far is
    assert dedup_by_equations([near, other, close]) == [1, 2]  # 6 more characters away from `other` than near
