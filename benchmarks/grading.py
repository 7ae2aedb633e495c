"""Grading throughput and verdict agreement: our `Grader` vs math-verify called directly.

    .venv/bin/python benchmarks/grading.py [--quick] [--workers N] [--timeout S] [--suite PATH]

Pairs: every GSM8K and MATH (train+test) reference solution graded against its own reference
answer (`reference_answer_from_solution`). Both paths see the same pairs: the `Grader` (cheap
checks in process, math-verify in a spawn pool) and `verify(parse(gold), parse(solution))` in a
single process. `--quick` keeps a few hundred pairs for CI. Data: `MATHDATA_DATA_DIR`, default
`../shared/data` next to the repo root.

Unboxed set: the same reference solutions with their final answer no longer boxed (GSM8K: the
`#### X` line replaced by "So the answer is $X$." or by a bare final line `$X$`; MATH: every
`\boxed{X}` replaced by `X` in place, so the answer stands in the solution's own final `$...$`,
or that text followed by "So the answer is $X$."), graded against the reference: share graded
correct and pairs/s, grader vs math-verify on the same pairs.

`--suite PATH` also grades the answer pairs of a Math-Verify checkout's own tests (the
`gold, pred, expected` rows of `PATH/tests/test_*.py`, read as literals, never imported) and
reports agreement with their expected verdicts, ours vs math-verify's defaults.

Also reported (the measurement behind benchmarks/RESULTS.md): agreement on response variants
(GSM8K "The answer is X.", GSM8K last-number fallback, equivalent rewrites of MATH answers, a
negative control pairing each MATH solution with the next problem's answer, Qwen2.5-Math sample
responses vs Qwen's own verdicts) and, in the full run, adversarial inputs. The last line is JSON.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from mathdata_pipeline.grading import (  # noqa: E402
    Grader,
    GradeResult,
    extract_answer,
    reference_answer_from_solution,
)
from mathdata_pipeline.grading.latex import match_brace  # noqa: E402

Pair = tuple[str, str]
QUICK_PAIRS_PER_DATASET = 150
MAX_EXAMPLES = 40


def data_dir() -> Path:
    """`MATHDATA_DATA_DIR`, else `../shared/data` relative to the repo root."""
    return Path(os.environ.get("MATHDATA_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a `.jsonl` or `.jsonl.gz` file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def every_kth(rows: list[Any], count: int | None) -> list[Any]:
    """A deterministic spread-out sample of about `count` rows (all rows when None)."""
    if count is None or count >= len(rows):
        return rows
    step = len(rows) / count
    return [rows[int(i * step)] for i in range(count)]


def reference_pairs(root: Path, sample: int | None) -> dict[str, list[Pair]]:
    """(solution, reference answer) pairs of GSM8K and MATH, train + test."""
    gsm8k = read_jsonl(root / "gsm8k/gsm8k_train.jsonl.gz") + read_jsonl(root / "gsm8k/gsm8k_test.jsonl")
    math = read_jsonl(root / "math/math_train.jsonl.gz") + read_jsonl(root / "math/math_test.jsonl.gz")
    return {
        "gsm8k": [
            (r["answer"], reference_answer_from_solution(r["answer"], "gsm8k") or "") for r in every_kth(gsm8k, sample)
        ],
        "math": [
            (r["solution"], reference_answer_from_solution(r["solution"], "boxed") or "")
            for r in every_kth(math, sample)
        ],
    }


def unboxed(text: str) -> str:
    """`text` with every `\\boxed{X}` / `\\fbox{X}` replaced by `X` (unclosed boxes left as they are)."""
    out, position = [], 0
    while True:
        found = (text.find("\\boxed{", position), text.find("\\fbox{", position))
        start = min((index for index in found if index >= 0), default=-1)
        if start < 0:
            return "".join(out) + text[position:]
        brace = text.index("{", start)
        close = match_brace(text, brace)
        if close is None:
            return "".join(out) + text[position:]
        out.append(text[position:start])
        out.append(unboxed(text[brace + 1 : close]))
        position = close + 1


def unboxed_pairs(root: Path, sample: int | None) -> dict[str, list[Pair]]:
    """(response, reference) pairs whose final answer is written without a box (module docstring)."""
    gsm8k = read_jsonl(root / "gsm8k/gsm8k_train.jsonl.gz") + read_jsonl(root / "gsm8k/gsm8k_test.jsonl")
    math = read_jsonl(root / "math/math_train.jsonl.gz") + read_jsonl(root / "math/math_test.jsonl.gz")
    sets: dict[str, list[Pair]] = {"gsm8k answer-is": [], "gsm8k bare": [], "math answer-is": [], "math bare": []}
    for row in every_kth(gsm8k, sample):
        reference = reference_answer_from_solution(row["answer"], "gsm8k") or ""
        body = row["answer"].rsplit("####", 1)[0].rstrip()
        sets["gsm8k answer-is"].append((f"{body}\nSo the answer is ${reference}$.", reference))
        sets["gsm8k bare"].append((f"{body}\n${reference}$", reference))
    for row in every_kth(math, sample):
        reference = reference_answer_from_solution(row["solution"], "boxed")
        if not reference:
            continue
        text = unboxed(row["solution"]).rstrip()
        sets["math answer-is"].append((f"{text}\nSo the answer is ${reference}$.", reference))
        sets["math bare"].append((text, reference))
    return sets


def suite_rows(checkout: Path) -> list[tuple[str, str, str, bool]]:
    """(test name, gold, prediction, expected verdict) of every literal `gold, pred, expected` row
    in the parametrized tests of a Math-Verify checkout (tests with a `strict` argument are
    left out: they test an option, not a verdict)."""
    rows = []
    for path in sorted((checkout / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for decorator in getattr(node, "decorator_list", []):
                if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"):
                    continue
                names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
                if "gold" not in names or "strict" in names or not isinstance(decorator.args[1], ast.List):
                    continue
                for element in decorator.args[1].elts:
                    try:
                        row = dict(zip(names, ast.literal_eval(element)))
                    except ValueError:
                        continue  # not a literal (an f-string)
                    expected = row.get("expected", row.get("result"))
                    rows.append((node.name, row["gold"], row["pred"], bool(expected)))
    return rows


def suite_run(grader: Grader, checkout: Path) -> tuple[int, int, int, list[str]]:
    """(pairs, agreeing with the expected verdict: ours, math-verify's defaults; our misses).

    A short gold answer without a box is the reference as written; a longer one (a worked
    solution) gives its extracted answer, as a dataset's reference would be."""
    from math_verify import parse, verify

    rows = suite_rows(checkout)
    references = [
        gold if len(gold) <= 150 and "\\boxed" not in gold else extract_answer(gold) or gold for _, gold, _, _ in rows
    ]
    ours = grader.grade_many([(pred, reference) for (_, _, pred, _), reference in zip(rows, references)])
    theirs = [bool(verify(parse(gold), parse(pred))) for _, gold, pred, _ in rows]
    misses = [
        f"{name}: expected={expected} reference={reference[:50]!r} extracted={str(result.extracted)[:50]!r} "
        f"reason={result.reason}"
        for (name, _, _, expected), reference, result in zip(rows, references, ours)
        if result.correct != expected
    ]
    agree_ours = sum(result.correct == row[3] for result, row in zip(ours, rows))
    return len(rows), agree_ours, sum(verdict == row[3] for verdict, row in zip(theirs, rows)), misses


def math_verify_verdicts(pairs: list[Pair]) -> list[bool]:
    """math-verify used directly, single process: `verify(parse(gold), parse(solution))`."""
    from math_verify import parse, verify

    return [bool(verify(parse("\\boxed{" + reference + "}"), parse(solution))) for solution, reference in pairs]


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """`(function(), seconds)`."""
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


# ---------------------------------------------------------------- variant checks

_FRAC = re.compile(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}")
_SQRT_FRAC = re.compile(r"\\[dt]?frac\{(\d*)\\sqrt\{(\d+)\}\}\{(\d+)\}")
_SUM = re.compile(r"([^+\-{}(),=\\]+)\+([^+\-{}(),=\\]+)")


def equivalent_rewrites(reference: str) -> list[tuple[str, str]]:
    """(kind, rewritten answer) pairs that are mathematically equal to a MATH reference."""
    out = []
    match = _FRAC.fullmatch(reference)
    if match:
        sign, numerator, denominator = match.groups()
        out.append(("frac -> a/b", f"{sign}{numerator}/{denominator}"))
        value = Fraction(int(numerator), int(denominator))
        rest = value.denominator
        for prime in (2, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            out.append(("frac -> decimal", f"{sign}{float(value)}"))
    match = _SQRT_FRAC.fullmatch(reference)
    if match:
        out.append(
            ("\\frac{a\\sqrt{b}}{c} -> a\\sqrt{b}/c", f"{match.group(1)}\\sqrt{{{match.group(2)}}}/{match.group(3)}")
        )
    match = _SUM.fullmatch(reference)
    if match and match.group(1).strip() != match.group(2).strip():
        out.append(("a+b -> b+a", f"{match.group(2)}+{match.group(1)}"))
    if re.fullmatch(r"-?\d+", reference):
        out.append(("N -> x = N.0", f"x = {reference}.0"))
    if reference.startswith("(") and reference.endswith(")") and "," in reference:
        out.append(("tuple -> \\left( a , b \\right)", "\\left( " + reference[1:-1].replace(",", " , ") + " \\right)"))
    if "\\frac" in reference:
        out.append(("\\frac -> \\dfrac", reference.replace("\\frac", "\\dfrac")))
    return out


def variant_checks(root: Path, sample: int | None) -> list[tuple[str, list[Pair], list[bool]]]:
    """(name, pairs, expected verdicts) of every robustness check."""
    gsm8k = every_kth(
        read_jsonl(root / "gsm8k/gsm8k_train.jsonl.gz") + read_jsonl(root / "gsm8k/gsm8k_test.jsonl"), sample
    )
    math = every_kth(
        read_jsonl(root / "math/math_train.jsonl.gz") + read_jsonl(root / "math/math_test.jsonl.gz"), sample
    )
    checks = []

    answer_is, last_number = [], []
    for row in gsm8k:
        body, final = row["answer"].rsplit("####", 1)
        reference = reference_answer_from_solution(row["answer"], "gsm8k") or ""
        answer_is.append((f"{body}The answer is {final.strip()}.", reference))
        last_number.append((body, reference))
    checks.append(("gsm8k: '#### X' -> 'The answer is X.'", answer_is, [True] * len(answer_is)))
    checks.append(("gsm8k: '#### X' line removed (last number)", last_number, [True] * len(last_number)))

    references = [reference_answer_from_solution(row["solution"], "boxed") or "" for row in math]
    rewrites = [
        (f"So the final answer is ${alt}$.", ref) for ref in references if ref for _, alt in equivalent_rewrites(ref)
    ]
    checks.append(("math: equivalent rewrites of the answer", rewrites, [True] * len(rewrites)))
    following = references[1:] + references[:1]
    shifted = [(row["solution"], reference) for row, reference in zip(math, following)]
    # Expected: whether math-verify finds the two problems' reference answers equal.
    same = math_verify_verdicts([(f"\\boxed{{{own}}}", other) for own, other in zip(references, following)])
    checks.append(("math: next problem's answer (negative control)", shifted, same))

    qwen = every_kth(
        read_jsonl(root / "synth_samples/qwen25math_math_cot_100.jsonl.gz"), None if sample is None else 20
    )
    responses = [(text, row["gt"]) for row in qwen for text in row["code"]]
    scores = [bool(score) for row in qwen for score in row["score"]]
    checks.append(("qwen2.5-math responses vs Qwen's verdicts", responses, scores))
    return checks


ADVERSARIAL = {
    "10k nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "10k nested parentheses": "\\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}",
    "3k nested \\frac": "\\boxed{" + "\\frac{1}{" * 3_000 + "2" + "}" * 3_000 + "}",
    "power tower 2^{2^{2^{2^{2^{2}}}}}": "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "9^9^9^9 (answer phrase)": "The answer is $9^9^9^9$.",
    "9^{9^{9^{9}}}": "\\boxed{9^{9^{9^{9}}}}",
    "10^{10^{10}}": "\\boxed{10^{10^{10}}}",
    "100k-character answer": "\\boxed{" + "1+" * 50_000 + "1}",
    "python code in answer": "\\boxed{__import__('os').system('echo pwned')}",
    "unicode junk": "\\boxed{\u202e\x00\ufffd\U0001d518\u200b\u221a\u2212\u221e\u2135}",
    "50k unclosed \\boxed{": "\\boxed{" * 50_000,
}


def adversarial_run(grader: Grader) -> list[tuple[str, GradeResult, float]]:
    """Grade each adversarial response against "5"; (name, result, seconds) each."""
    out = []
    for name, response in ADVERSARIAL.items():
        result, seconds = timed(lambda response=response: grader.grade(response, "5"))
        out.append((name, result, seconds))
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred pairs (CI)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--suite", type=Path, help="a Math-Verify checkout: also grade its tests' answer pairs")
    args = parser.parse_args()
    root = data_dir()
    sample = QUICK_PAIRS_PER_DATASET if args.quick else None
    datasets = reference_pairs(root, sample)

    math_verify_verdicts([("\\boxed{1}", "1")])  # import sympy/math-verify outside the timings
    rows = []
    with Grader(timeout_s=args.timeout, workers=args.workers) as grader:
        _, startup = timed(lambda: grader.grade("\\boxed{x+1}", "1+x"))  # starts the pool
        for name, pairs in datasets.items():
            ours, our_seconds = timed(lambda pairs=pairs: grader.grade_many(pairs))
            theirs, their_seconds = timed(lambda pairs=pairs: math_verify_verdicts(pairs))
            rows.append((name, pairs, ours, our_seconds, theirs, their_seconds))
        unboxed_rows = []
        for name, pairs in unboxed_pairs(root, sample).items():
            ours, our_seconds = timed(lambda pairs=pairs: grader.grade_many(pairs))
            theirs, their_seconds = timed(lambda pairs=pairs: math_verify_verdicts(pairs))
            unboxed_rows.append((name, pairs, ours, our_seconds, theirs, their_seconds))
        checks = [
            (name, pairs, expected, grader.grade_many(pairs)) for name, pairs, expected in variant_checks(root, sample)
        ]
        adversarial = [] if args.quick else adversarial_run(grader)
        suite = suite_run(grader, args.suite) if args.suite else None

    print(f"pool startup (spawn {args.workers} workers, import math-verify): {startup:.2f} s")
    print(
        f"{'dataset':<8} {'pairs':>6} {'grader/s':>10} {'math-verify/s':>14} {'ratio':>7} "
        f"{'grader correct':>15} {'math-verify correct':>20} {'agreement':>10}"
    )
    for name, pairs, ours, our_s, theirs, their_s in rows:
        print(
            f"{name:<8} {len(pairs):>6} {len(pairs) / our_s:>10.0f} {len(pairs) / their_s:>14.1f} "
            f"{their_s / our_s:>7.1f} {_share(r.correct for r in ours):>15.4%} "
            f"{_share(theirs):>20.4%} {_share(r.correct == t for r, t in zip(ours, theirs)):>10.4%}"
        )
        reasons = Counter(r.reason for r in ours)
        print(f"         reasons: {dict(reasons)}")
        differing = [
            (pair, result, verdict)
            for pair, result, verdict in zip(pairs, ours, theirs)
            if result.correct != verdict or not result.correct
        ]
        print(f"         grader incorrect or differing from math-verify: {len(differing)}")
        for (solution, reference), result, verdict in differing[:MAX_EXAMPLES]:
            print(f"         ref={reference!r} grader={result.reason} math-verify={verdict} tail={solution[-90:]!r}")

    print(
        f"\n{'unboxed set':<16} {'pairs':>6} {'grader/s':>10} {'math-verify/s':>14} {'ratio':>7} "
        f"{'grader correct':>15} {'math-verify correct':>20}"
    )
    for name, pairs, ours, our_s, theirs, their_s in unboxed_rows:
        print(
            f"{name:<16} {len(pairs):>6} {len(pairs) / our_s:>10.0f} {len(pairs) / their_s:>14.1f} "
            f"{their_s / our_s:>7.1f} {_share(r.correct for r in ours):>15.4%} {_share(theirs):>20.4%}"
        )
        print(f"         reasons: {dict(Counter(r.reason for r in ours))}")
        misses = [(pair, result, verdict) for pair, result, verdict in zip(pairs, ours, theirs) if not result.correct]
        for (response, reference), result, verdict in misses[: MAX_EXAMPLES // 4]:
            print(
                f"    miss: ref={reference!r} extracted={result.extracted!r} reason={result.reason} "
                f"math-verify={verdict} tail={response[-70:]!r}"
            )

    print(f"\n{'check':<55} {'pairs':>6} {'agreement':>10}  reasons")
    for name, pairs, expected, results in checks:
        agree = _share(r.correct == e for r, e in zip(results, expected))
        print(f"{name:<55} {len(pairs):>6} {agree:>10.4%}  {dict(Counter(r.reason for r in results))}")
        misses = [(p, r, e) for p, r, e in zip(pairs, results, expected) if r.correct != e]
        for (response, reference), result, expect in misses[: MAX_EXAMPLES // 4]:
            print(
                f"    miss: expected={expect} ref={reference!r} extracted={result.extracted!r} "
                f"reason={result.reason} tail={response[-70:]!r}"
            )

    if adversarial:
        print(f"\n{'adversarial response (reference 5)':<40} {'reason':>12} {'correct':>8} {'seconds':>8}")
        for name, result, seconds in adversarial:
            print(f"{name:<40} {result.reason:>12} {result.correct!s:>8} {seconds:>8.2f}")

    if suite is not None:
        pairs, ours, theirs, misses = suite
        print(f"\nMath-Verify test pairs: {pairs}; agreeing with the expected verdict: ", end="")
        print(f"grader {ours}, math-verify {theirs}")
        for miss in misses:
            print(f"    miss: {miss}")

    pairs_total = sum(len(r[1]) for r in rows)
    our_total = sum(r[3] for r in rows)
    their_total = sum(r[5] for r in rows)
    agreement = sum(sum(a.correct == b for a, b in zip(r[2], r[4])) for r in rows) / pairs_total
    unboxed_total = sum(len(r[1]) for r in unboxed_rows)
    unboxed_correct = sum(sum(result.correct for result in row[2]) for row in unboxed_rows)
    print(
        json.dumps(
            {
                "benchmark": "grading",
                "pairs": pairs_total,
                "grader_per_second": round(pairs_total / our_total, 1),
                "math_verify_per_second": round(pairs_total / their_total, 1),
                "ratio": round(their_total / our_total, 2),
                "agreement": round(agreement, 5),
                "unboxed_pairs": unboxed_total,
                "unboxed_grader_correct": round(unboxed_correct / unboxed_total, 5),
                "unboxed_math_verify_correct": round(sum(sum(row[4]) for row in unboxed_rows) / unboxed_total, 5),
                "unboxed_ratio": round(sum(r[5] for r in unboxed_rows) / sum(r[3] for r in unboxed_rows), 2),
            }
        )
    )


def _share(flags: Any) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


if __name__ == "__main__":
    main()
