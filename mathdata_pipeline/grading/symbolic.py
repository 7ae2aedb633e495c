"""Symbolic equivalence of two answers with math-verify, under a soft (signal) time limit.

This module is what the grading worker processes run: the structural comparison of
`compare.py`, with formulas that the cheap checks cannot decide handed to math-verify. It never
evaluates model text as Python: math-verify parses LaTeX with an ANTLR grammar, and its
plain-expression parser only accepts strings of digits and arithmetic operators.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from .compare import Leaf, answers_equal, cheap_leaf
from .numeric import Tolerance

_DEFAULT_TOLERANCE = Tolerance()


class SymbolicTimeout(BaseException):
    """Raised by the soft time limit; a BaseException so that `except Exception` cannot eat it."""


@cache
def _math_verify() -> tuple[Callable[..., list[Any]], Callable[..., bool], list[Any], type]:
    """Import math-verify on first use (it pulls in sympy, about a second) and configure it.

    Returns `(parse, verify, extraction_config, TimeoutException)`. Its logger is set to ERROR
    because the library warns once per process that its own timeouts are disabled: this module
    replaces them with `_time_limit`.
    """
    from math_verify import (
        ExprExtractionConfig,
        LatexExtractionConfig,
        LatexNormalizationConfig,
        parse,
        verify,
    )
    from math_verify.errors import TimeoutException

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # Units are already stripped by `clean_answer`; math-verify's own unit list contains
    # one-letter words ("t", "o") that would turn `12+10t` into `12+10`.
    normalization = LatexNormalizationConfig(
        basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all"
    )
    config = [
        LatexExtractionConfig(boxed_match_priority=0, normalization_config=normalization),
        ExprExtractionConfig(),
    ]
    return parse, verify, config, TimeoutException


def preload() -> None:
    """Import math-verify and warm sympy up now (worker initializer).

    The first relation/set comparison in a fresh process loads more of sympy (about 0.5 s);
    doing it here keeps that cost out of the first task's time limit.
    """
    parse, verify, config, _ = _math_verify()
    gold = parse("\\boxed{[1,3]}", extraction_config=config, parsing_timeout=None)
    target = parse("\\boxed{1 \\le x \\le 3}", extraction_config=config, parsing_timeout=None)
    verify(gold, target, timeout_seconds=None)


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise SymbolicTimeout in this thread after `seconds` (SIGALRM; main thread only).

    Off the main thread, or when `seconds` is None, no limit is set: the caller's process
    boundary (see `Grader`) is then the only protection.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum: int, frame: object) -> None:
        raise SymbolicTimeout

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _symbolic_leaf(tolerance: Tolerance) -> Leaf:
    """Leaf check for the worker: the cheap check, then math-verify (`reference` as the gold side,
    its check is not symmetric). Parsed formulas are cached for the comparison."""
    parse, verify, config, _ = _math_verify()
    cheap = cheap_leaf(tolerance)
    parsed: dict[str, list[Any]] = {}

    def parsed_once(text: str) -> list[Any]:
        if text not in parsed:
            parsed[text] = parse(f"\\boxed{{{text}}}", extraction_config=config, parsing_timeout=None)
        return parsed[text]

    def leaf(predicted: str, reference: str) -> bool:
        verdict = cheap(predicted, reference)
        if verdict is not None:
            return verdict
        gold, target = parsed_once(reference), parsed_once(predicted)
        return bool(gold and target and verify(gold, target, timeout_seconds=None))

    return leaf


def symbolic_equal(
    predicted: str, reference: str, timeout_s: float | None = 5.0, tolerance: Tolerance = _DEFAULT_TOLERANCE
) -> str:
    """Check `predicted == reference` structurally, with math-verify deciding formulas; returns a
    reason string.

    Inputs: two cleaned answers (`clean_answer(..., keep_assignment=True)` output, LaTeX without
    `$`); `timeout_s`, the soft limit for the whole comparison (None: no limit; only enforced on
    the main thread); `tolerance`, for numbers compared in process.
    Output: `"symbolic"` if they are the same object, `"mismatch"` if not (including when a
    formula cannot be parsed), `"timeout"` if the limit expired, or `"error:<Type>"` for an
    exception (e.g. `error:RecursionError`, `error:MemoryError`). Never raises `Exception`s.
    """
    _, _, _, library_timeout = _math_verify()
    try:
        with _time_limit(timeout_s):
            equal = answers_equal(predicted, reference, _symbolic_leaf(tolerance))
            return "symbolic" if equal else "mismatch"
    except (SymbolicTimeout, library_timeout):
        return "timeout"
    except Exception as error:  # noqa: BLE001 - any library failure is a verdict, not a crash
        return f"error:{type(error).__name__}"
