"""Answer grading: extraction, normalization, numeric/symbolic checks, the process pool's hard
time limit, adversarial inputs, and agreement on real GSM8K / MATH reference solutions."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mathdata_pipeline.grading import (
    Grader,
    GradeResult,
    Tolerance,
    clean_answer,
    extract_answer,
    grade,
    last_boxed,
    normalize_answer,
    reference_answer_from_solution,
    strip_thousands,
)

TIMEOUT_S = 2.0
# Past the soft limit: pebble's hard-limit grace (0.5 s) + SIGTERM->SIGKILL grace (3 s) + margin.
SLACK_S = 6.0


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout_s=TIMEOUT_S, workers=2) as shared:
        yield shared


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _spread(rows: list, count: int) -> list:
    step = len(rows) / count
    return [rows[int(i * step)] for i in range(count)]


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\left\\{ \\frac{a}{b^{2}} \\right\\}}", "\\left\\{ \\frac{a}{b^{2}} \\right\\}"),
        ("first \\boxed{1}, then \\boxed{2}.", "2"),
        ("outer \\boxed{x = \\boxed{3}} end", "x = \\boxed{3}"),
        ("\\boxed {17}.$$", "17"),
        ("is $\\boxed 5$.", "5"),
        ("\\fbox{42}", "42"),
        ("earlier \\boxed{7} then a truncated \\boxed{12", "7"),
        ("an empty \\boxed{} after \\boxed{9}", "9"),
        ("Janet makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18"),
        ("text\n#### 1,080\n", "1,080"),
        ("Therefore, the answer is $\\frac{3}{4}$. Done.", "\\frac{3}{4}"),
        ("The final answer is 3.5. I hope it is correct.", "3.5"),
        ("Answer: (B)", "(B)"),
        ("**Final Answer:** **12**", "12"),
        ("She has 1,234 apples and buys 5,000 more, 6,234 in all", "6234"),
        ("Takes 2 + <<2+1=3>>3 days", "3"),
        ("Half: 240/2 = 120.\nIt takes 120/24 = <<120/24=5>>5 hours to read 120 pages.", "5"),
        ("So the answer isn't 4; we get 7", "7"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_fallback_can_be_disabled():
    assert extract_answer("I think it is 42 apples", fallback_last_number=True) == "42"
    assert extract_answer("I think it is 42 apples", fallback_last_number=False) is None
    assert extract_answer("no digits here") is None
    assert extract_answer("") is None


def test_last_boxed_is_linear_on_deep_nesting():
    deep = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    start = time.perf_counter()
    assert last_boxed(deep) == "{" * 10_000 + "1" + "}" * 10_000
    assert last_boxed("\\boxed{" * 50_000) is None
    assert time.perf_counter() - start < 1.0


def test_reference_answer_from_solution():
    assert reference_answer_from_solution("a\nb\n#### 1,080", "gsm8k") == "1080"
    assert reference_answer_from_solution("no marker", "gsm8k") is None
    assert reference_answer_from_solution("So $\\boxed{\\dfrac{1}{2}}$.", "boxed") == "\\dfrac{1}{2}"
    assert reference_answer_from_solution("empty \\boxed{}", "boxed") is None
    with pytest.raises(ValueError, match="unknown reference style"):
        reference_answer_from_solution("x", "latex")


# ---------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\(\\tfrac12\\)", "\\frac{1}{2}"),
        ("\\[ 3 \\]", "3"),
        ("5.", "5"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("1\\!000", "1000"),
        ("1\\,000", "1000"),
        ("85\\text{ feet}", "85"),
        ("34\\text{ sq. units}", "34"),
        ("382 dollars", "382"),
        ("12 cm^2", "12"),
        ("5 m", "5"),
        ("2s", "2s"),
        ("3s^2", "3s^2"),
        ("\\$1,234.50", "1234.5"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        ("(1,2)", "(1,2)"),
        ("1,2", "1,2"),
        ("(1,000, 2)", "(1,000,2)"),
        ("x = 5", "5"),
        ("\\theta = \\frac{\\pi}{3}", "\\frac{\\pi}{3}"),
        ("2x - y + 2z - 18 = 0", "2x-y+2z-18=0"),
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("3.0", "3"),
        ("3/4", "\\frac{3}{4}"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("\\text{(A)}", "A"),
        ("\\textbf{Yes}", "yes"),
        ("\\text{A, C}", "a,c"),
        ("\\pi r^2", "\\pi r^2"),
        ("x \\le 5", "x\\leq5"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("\u22125", "-5"),
        ("{{7}}", "7"),
        ("\\approx 8.24 \\text{ mph}", "8.24"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_clean_answer_keeps_latex_parseable():
    assert clean_answer("$\\dfrac{1}{2}\\text{ cm}.$") == "\\frac{1}{2}"
    assert clean_answer("\\pi r^2") == "\\pi r^2"
    assert strip_thousands("12,345.5") == "12345.5"
    assert strip_thousands("(1,2)") == "(1,2)"


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("response", "reference", "reason"),
    [
        ("\\boxed{0.50}", ".5", "exact"),
        ("\\boxed{0.3333333333}", "\\frac{1}{3}", "numeric"),
        ("\\boxed{50\\%}", "0.5", "numeric"),
        ("#### 1,000,000", "1000000", "exact"),
        ("\\boxed{1e3}", "1000", "numeric"),
    ],
)
def test_numeric_equal(response, reference, reason):
    assert grade(response, reference) == GradeResult(True, extract_answer(response), reason)


def test_numeric_tolerance_and_exact_integers():
    assert grade("\\boxed{0.333}", "1/3").reason == "mismatch"
    assert grade("\\boxed{0.333}", "1/3", tolerance=Tolerance(rel=1e-2)).reason == "numeric"
    assert grade("\\boxed{1.00000001}", "1", tolerance=Tolerance(rel=0, abs=0)).correct is False
    # Integers are compared exactly, even where the relative tolerance would accept them.
    assert grade("\\boxed{1000000001}", "1000000000").correct is False
    assert grade("\\boxed{7}", "8").reason == "mismatch"


def test_symbolic_equivalence(grader):
    pairs = [
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt2}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt{3}}"),
        ("\\boxed{(-\\infty,-2)\\cup(2,\\infty)}", "(2,\\infty)\\cup(-\\infty,-2)"),
        ("\\boxed{[1,3]}", "1 \\le x \\le 3"),
        ("\\boxed{x^2+2x+1}", "(x+1)^2"),
        ("\\boxed{12+10t}", "10t + 12"),
        ("\\boxed{\\{3,2,1\\}}", "\\{1,2,3\\}"),
    ]
    results = grader.grade_many(pairs)
    assert all(result.correct for result in results), results
    assert results[1].reason == "symbolic"
    assert grade("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt2}{2}").reason == "symbolic"  # in-process


def test_symbolic_mismatches(grader):
    pairs = [
        ("\\boxed{[1, 3)}", "[1,3]"),
        ("\\boxed{(1,2)}", "(2,1)"),
        ("\\boxed{x^2+1}", "(x+1)^2"),
        # math-verify alone would compare only the right side of an equation with the number.
        ("\\boxed{2x - y + 2z - 18 = 0}", "0"),
    ]
    assert [result.correct for result in grader.grade_many(pairs)] == [False] * len(pairs)


@pytest.mark.parametrize(
    ("response", "reference", "reason"),
    [
        # the extraction step is named in the reason when it is a box run or a math span
        ("so the probability is $\\frac13$.", "\\frac{1}{3}", "exact@math_span"),
        ("$t = \\boxed{\\frac13}$ or $t = \\boxed{-2}$", "-2, \\frac{1}{3}", "structural@boxes"),
        ("The answer is $x \\in [-2, 7]$.", "[-2,7]", "structural"),
        ("Therefore $(3, \\pi/2)$.", "(3, \\frac{\\pi}{2})", "symbolic@math_span"),
        ("so it is about $\\sqrt{17}$", "4.123105625617661", "symbolic@math_span"),
        ("So the line is $y=-\\frac{1}{2}x+\\frac{3}{4}$.", "2x+4y-3=0", "symbolic@math_span"),
        ("\\boxed{-x > -1}", "x < 1", "symbolic"),
        (
            "The sum is $\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}$",
            "\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}",
            "symbolic@math_span",
        ),
        ("The roots are $\\{1 \\pm \\sqrt{5}, -2\\}$.", "\\{-2, \\sqrt5+1, 1-\\sqrt5\\}", "symbolic@math_span"),
        ("Hence $x = 12$", "10", "mismatch@math_span"),
        ("\\boxed{(3, \\pi)}", "(3, \\frac{\\pi}{2})", "mismatch"),
        ("We get $y = x + 1$", "x + 1 = 0", "mismatch@math_span"),
    ],
)
def test_verdicts_name_the_step(grader, response, reference, reason):
    (result,) = grader.grade_many([(response, reference)])
    assert result.reason == reason, result
    assert result.correct is reason.startswith(("exact", "numeric", "structural", "symbolic"))


def test_box_mode_is_configurable():
    response = "$t = \\boxed{1}$ or $t = \\boxed{2}$"
    assert grade(response, "1, 2").reason == "exact@boxes"
    assert grade(response, "2", boxes="last") == GradeResult(True, "2", "exact")
    with pytest.raises(ValueError, match="boxes"):
        Grader(boxes="first")


def test_special_reasons(grader):
    items = [
        {"response": "\\boxed{5}", "reference": "5", "finish_reason": "length"},
        {"response": "\\boxed{5", "reference": "5", "finish_reason": "abort"},
        {"response": "I do not know", "reference": "5"},
        ("\\boxed{5}", "   "),
        ("\\boxed{" + "x+" * 1500 + "x}", "x"),
        ("\\boxed{5}", "5", "stop"),
    ]
    reasons = [result.reason for result in grader.grade_many(items)]
    assert reasons == ["truncated", "truncated", "no_answer", "no_reference", "too_long", "exact"]


def test_grader_works_from_a_thread(grader):
    """Dagster may call from a non-main thread: the pool does not depend on the caller's thread."""
    results: list[GradeResult] = []
    worker = threading.Thread(
        target=lambda: results.extend(grader.grade_many([("\\boxed{\\sqrt{4}}", "2"), ("#### 3", "3")]))
    )
    worker.start()
    worker.join(timeout=60)
    assert [result.reason for result in results] == ["symbolic", "exact"]


def test_grader_validates_arguments():
    with pytest.raises(ValueError):
        Grader(timeout_s=0)
    with pytest.raises(ValueError):
        Grader(workers=0)


# ---------------------------------------------------------------- time limits and adversarial input


def test_pathological_expression_times_out(grader):
    start = time.perf_counter()
    results = grader.grade_many(
        [("\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "5"), ("\\boxed{10^{10^{10}}}", "7"), ("\\boxed{x+1}", "1+x")]
    )
    elapsed = time.perf_counter() - start
    assert [r.reason for r in results] == ["timeout", "timeout", "symbolic"]
    assert elapsed < TIMEOUT_S + SLACK_S
    # In process, the soft (SIGALRM) limit applies.
    start = time.perf_counter()
    assert grade("\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "5", timeout_s=TIMEOUT_S).reason == "timeout"
    assert time.perf_counter() - start < TIMEOUT_S + SLACK_S


def test_unresponsive_worker_is_killed():
    """A worker that cannot run its own alarm (stopped here with SIGSTOP, as if stuck in C code)
    is killed at the hard limit, and the pool keeps working afterwards."""
    others = {child.pid for child in multiprocessing.active_children()}
    with Grader(timeout_s=TIMEOUT_S, workers=1) as lone:
        assert lone.grade("\\boxed{x+1}", "1+x").reason == "symbolic"  # pool is up
        workers = [child for child in multiprocessing.active_children() if child.pid not in others]
        assert len(workers) == 1

        def freeze() -> None:
            time.sleep(0.8)  # the task has started (and runs for TIMEOUT_S unless stopped)
            for worker in workers:
                os.kill(worker.pid, signal.SIGSTOP)

        freezer = threading.Thread(target=freeze)
        freezer.start()
        start = time.perf_counter()
        result = lone.grade("\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "5")
        elapsed = time.perf_counter() - start
        freezer.join()
        assert result == GradeResult(False, "2^{2^{2^{2^{2^{2}}}}}", "timeout")
        assert elapsed < TIMEOUT_S + SLACK_S
        assert lone.grade("\\boxed{\\sqrt{4}}", "2").reason == "symbolic"


ADVERSARIAL = {
    "nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "nested parentheses": "\\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}",
    "nested fractions": "\\boxed{" + "\\frac{1}{" * 3_000 + "2" + "}" * 3_000 + "}",
    "power tower": "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "9^9^9^9": "The answer is $9^9^9^9$.",
    "9^{9^{9^{9}}}": "\\boxed{9^{9^{9^{9}}}}",
    "100k characters": "\\boxed{" + "1+" * 50_000 + "1}",
    "100k digits": "\\boxed{" + "7" * 100_000 + "}",
    "unicode junk": "\\boxed{\u202e\x00\ufffd\U0001d518\u200b\u221a\u2212\u221e\u2135\ud7ff}",
    "unclosed boxes": "\\boxed{" * 20_000,
}


def test_adversarial_inputs_are_incorrect_and_bounded(grader):
    for name, response in ADVERSARIAL.items():
        start = time.perf_counter()
        result = grader.grade(response, "5")
        elapsed = time.perf_counter() - start
        assert result.correct is False, name
        assert result.reason in {"mismatch", "timeout", "too_long", "no_answer"}, (name, result)
        assert elapsed < TIMEOUT_S + SLACK_S, (name, elapsed)


def test_code_in_answer_is_never_executed(grader, tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    responses = [
        f"\\boxed{{{payload}}}",
        f"The answer is {payload}",
        f"The answer is ${payload}$.",
        f"\\boxed{{\\text{{{payload}}}}}",
        f'\\boxed{{eval("{payload}")}}',
        f"\\boxed{{().__class__.__bases__[0].__subclasses__()}} {payload}",
    ]
    for reference in ("5", payload):
        results = grader.grade_many([(response, reference) for response in responses])
        in_process = [grade(response, reference) for response in responses]
        assert all(result.reason != "timeout" for result in results + in_process)
    assert not marker.exists()


# ---------------------------------------------------------------- real data


def test_real_reference_solutions_agree(data_root, grader):
    gsm8k = _spread(_read_jsonl(data_root / "gsm8k/gsm8k_train.jsonl.gz"), 200)
    gsm8k += _spread(_read_jsonl(data_root / "gsm8k/gsm8k_test.jsonl"), 100)
    math = _spread(_read_jsonl(data_root / "math/math_train.jsonl.gz"), 200)
    math += _spread(_read_jsonl(data_root / "math/math_test.jsonl.gz"), 100)
    for rows, field, style in ((gsm8k, "answer", "gsm8k"), (math, "solution", "boxed")):
        pairs = [(row[field], reference_answer_from_solution(row[field], style) or "") for row in rows]
        results = grader.grade_many(pairs)
        assert sum(result.correct for result in results) / len(results) >= 0.99, style
        # The same answers written differently are still accepted.
        rewritten = [(f"So the final answer is ${reference}$.", reference) for _, reference in pairs]
        rewritten = [(text.replace("\\frac", "\\dfrac"), ref) for text, ref in rewritten if ref]
        results = grader.grade_many(rewritten)
        assert sum(result.correct for result in results) / len(results) >= 0.99, style


def test_math500_answer_field_matches_boxed_solution(data_root, grader):
    rows = _spread(_read_jsonl(data_root / "math/math500_test.jsonl"), 200)
    results = grader.grade_many([(row["solution"], row["answer"]) for row in rows])
    assert sum(result.correct for result in results) / len(results) >= 0.99
