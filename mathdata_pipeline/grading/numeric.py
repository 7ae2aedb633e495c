"""Numeric values of simple answers and their comparison with a tolerance (no eval, no sympy)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PLAIN = re.compile(_NUMBER)
_SLASH = re.compile(rf"({_NUMBER})/({_NUMBER})")
_FRAC = re.compile(rf"([-+]?)\\frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}")
# A mixed number `2\frac{1}{2}` (2.5): an integer followed by a proper fraction of integers.
_MIXED = re.compile(r"([-+]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_PERCENT_MARK = re.compile(r"%|\\%|\bpercent(?:age)?\b|\bpct\b", re.IGNORECASE)
# Longer digit strings are not numbers a grader should compare by value (and would be slow).
_MAX_CHARS = 400


@dataclass(frozen=True)
class Tolerance:
    """Tolerance of the numeric check: `a` equals `b` when `|a-b| <= max(rel*max(|a|,|b|), abs)`.

    Attributes: `rel` (default 1e-9) and `abs` (default 1e-8), both non-negative. Two integers
    written without a decimal point are always compared exactly, whatever the tolerance.
    """

    rel: float = 1e-9
    abs: float = 1e-8


def parse_number(normalized: str) -> float | int | None:
    """Value of a normalized answer that is a plain number, or None.

    Accepts integers (returned as exact `int`), decimals and scientific notation (`float`),
    ratios of two numbers written `a/b` or `\\frac{a}{b}` with an optional sign in front
    (`float`), and mixed numbers `2\\frac{1}{2}` (an integer and a proper fraction: 2.5).
    Expects the output of `normalize_answer` (no spaces, no `$`, no thousands separators).
    Returns None for anything else, for division by zero, for non-finite values and for strings
    longer than 400 characters.
    """
    if not normalized or len(normalized) > _MAX_CHARS:
        return None
    if _PLAIN.fullmatch(normalized):
        if re.fullmatch(r"[-+]?\d+", normalized):
            return int(normalized)
        return _finite(float(normalized))
    match = _SLASH.fullmatch(normalized)
    if match is not None:
        return _ratio("", match.group(1), match.group(2))
    match = _FRAC.fullmatch(normalized)
    if match is not None:
        return _ratio(match.group(1), match.group(2), match.group(3))
    match = _MIXED.fullmatch(normalized)
    if match is not None:
        sign, whole, numerator, denominator = match.groups()
        if int(numerator) < int(denominator):
            value = int(whole) + int(numerator) / int(denominator)
            return _finite(-value if sign == "-" else value)
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ratio(sign: str, numerator: str, denominator: str) -> float | None:
    denominator_value = float(denominator)
    if denominator_value == 0:
        return None
    value = float(numerator) / denominator_value
    return _finite(-value if sign == "-" else value)


def has_percent(answer: str) -> bool:
    """True when the raw answer is written as a percentage (`50%`, `50\\%`, `50 percent`, `50 pct`)."""
    return _PERCENT_MARK.search(answer) is not None


def numbers_equal(
    predicted: float | int,
    reference: float | int,
    tolerance: Tolerance = Tolerance(),
    *,
    predicted_percent: bool = False,
    reference_percent: bool = False,
) -> bool:
    """Whether two parsed numbers are equal within `tolerance`.

    A side flagged as a percentage (`has_percent`) may also be read divided by 100, so `50%`
    equals `0.5` and also `50`. Two `int` values (both written without a decimal point) are
    compared exactly.
    """
    predicted_values = [predicted, predicted / 100] if predicted_percent else [predicted]
    reference_values = [reference, reference / 100] if reference_percent else [reference]
    for left in predicted_values:
        for right in reference_values:
            if isinstance(left, int) and isinstance(right, int):
                if left == right:
                    return True
            elif math.isclose(left, right, rel_tol=tolerance.rel, abs_tol=tolerance.abs):
                return True
    return False
