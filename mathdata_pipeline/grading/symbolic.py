"""Symbolic equivalence of two answers with math-verify, under a soft (signal) time limit.

This module is what the grading worker processes run. It never evaluates model text as Python:
math-verify parses LaTeX with an ANTLR grammar, and its plain-expression parser only accepts
strings of digits and arithmetic operators.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any


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
    symbolic_equal("[1,3]", "1 \\le x \\le 3", timeout_s=None)


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


def symbolic_equal(predicted: str, reference: str, timeout_s: float | None = 5.0) -> str:
    """Check `predicted == reference` symbolically with math-verify; returns a reason string.

    Inputs: two cleaned answers (`clean_answer` output, LaTeX without `$`); `timeout_s`, the soft
    limit for parsing both and verifying (None: no limit; only enforced on the main thread).
    Output: `"symbolic"` if math-verify proves them equal, `"mismatch"` if not (including when
    either side cannot be parsed), `"timeout"` if the limit expired, or `"error:<Type>"` for an
    exception (e.g. `error:RecursionError`, `error:MemoryError`). Never raises `Exception`s.
    `reference` is passed to math-verify as the gold answer (its check is not symmetric).
    """
    parse, verify, config, library_timeout = _math_verify()
    try:
        with _time_limit(timeout_s):
            gold = parse(f"\\boxed{{{reference}}}", extraction_config=config, parsing_timeout=None)
            target = parse(f"\\boxed{{{predicted}}}", extraction_config=config, parsing_timeout=None)
            if not gold or not target:
                return "mismatch"
            return "symbolic" if verify(gold, target, timeout_seconds=None) else "mismatch"
    except (SymbolicTimeout, library_timeout):
        return "timeout"
    except Exception as error:  # noqa: BLE001 - any library failure is a verdict, not a crash
        return f"error:{type(error).__name__}"
