"""Grading a response against a reference answer: the verdict pipeline and the `Grader` pool.

Order of checks (first that decides wins):
`truncated` (finish_reason "length"/"abort") -> `no_answer` -> `no_reference` -> `restated` (only
when the question is given: a non-numeric answer that merely restates an expression of the
question, see `restatement.py`) -> `exact`
(normalized strings equal) -> `numeric` (both plain numbers: equal within tolerance, otherwise
`mismatch`) -> `too_long` -> `structural` / `mismatch` (the comparison of `compare.py` decided
in process: tuples, sets, intervals, relations, ... whose parts are equal as strings or numbers)
-> `symbolic` (the same comparison in a worker, math-verify deciding formulas) / `mismatch` /
`timeout` / `error:...`.

When the answer was found by a step newer than the first grader's (several boxes joined:
`boxes`; the last LaTeX math span: `math_span`), the reason names it: `exact@math_span`,
`symbolic@boxes`, `mismatch@math_span`, ... Answers from one box, `####`, an answer phrase or the
last number keep the plain codes.
"""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, replace
from typing import Any

from pebble import ProcessExpired, ProcessPool

from .compare import answers_equal, cheap_leaf
from .extract import BOX_MODES, BoxMode, extract_with_step
from .normalize import clean_answer, normalize_answer
from .numeric import Tolerance, has_percent, numbers_equal, parse_number
from .restatement import restates_question
from .symbolic import preload, symbolic_equal

TRUNCATED_FINISH_REASONS = frozenset({"length", "abort"})
# Seconds a worker may run past the soft limit before it is killed (covers C-level hangs).
_HARD_LIMIT_GRACE_S = 0.5
DEFAULT_TOLERANCE = Tolerance()
# Extraction steps named in the reason (see the module docstring).
STEPS_IN_REASON = frozenset({"boxes", "math_span"})


@dataclass(frozen=True)
class GradeResult:
    """Verdict for one response.

    Attributes: `correct`; `extracted`, the raw answer found in the response (None if none);
    `reason`, a short machine-readable code: "exact", "numeric", "structural", "symbolic"
    (correct) or "mismatch", "no_answer", "no_reference", "restated" (the answer only restates
    an expression of the question), "truncated", "too_long", "timeout",
    "error:<Type>"; followed by "@boxes" or "@math_span" when the answer was found by that
    extraction step (e.g. "exact@math_span").
    """

    correct: bool
    extracted: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict with keys correct, extracted, reason."""
        return asdict(self)


@dataclass(frozen=True)
class _SymbolicCheck:
    """A pair the cheap checks could not decide: cleaned answers for the worker; `suffix` is added
    to the reason ("" or "@<step>")."""

    extracted: str
    predicted: str
    reference: str
    suffix: str = ""


def _cheap_grade(
    response: str,
    reference: str,
    finish_reason: str | None,
    fallback_last_number: bool,
    boxes: BoxMode,
    tolerance: Tolerance,
    max_symbolic_chars: int,
    question: str | None = None,
) -> GradeResult | _SymbolicCheck:
    """Every check except the symbolic one; returns a verdict or the pair still to check.
    `question` (None: not known) enables the restatement check."""
    extracted, step = extract_with_step(response, fallback_last_number=fallback_last_number, boxes=boxes)
    if finish_reason in TRUNCATED_FINISH_REASONS:
        return GradeResult(False, extracted, "truncated")
    if question and extracted and normalize_answer(reference) and restates_question(extracted, reference, question):
        outcome: GradeResult | _SymbolicCheck = GradeResult(False, extracted, "restated")
    else:
        outcome = _compare_answers(extracted, reference, tolerance, max_symbolic_chars)
    if step not in STEPS_IN_REASON:
        return outcome
    if isinstance(outcome, GradeResult):
        return replace(outcome, reason=f"{outcome.reason}@{step}")
    return replace(outcome, suffix=f"@{step}")


def _compare_answers(
    extracted: str | None, reference: str, tolerance: Tolerance, max_symbolic_chars: int
) -> GradeResult | _SymbolicCheck:
    """Compare an extracted answer with a reference answer without the symbolic check: a verdict,
    or the cleaned pair that math-verify still has to decide."""
    predicted_norm = normalize_answer(extracted) if extracted else ""
    if not predicted_norm:
        return GradeResult(False, extracted, "no_answer")
    reference_norm = normalize_answer(reference)
    if not reference_norm:
        return GradeResult(False, extracted, "no_reference")
    if predicted_norm == reference_norm:
        return GradeResult(True, extracted, "exact")
    predicted_value = parse_number(predicted_norm)
    reference_value = parse_number(reference_norm)
    if predicted_value is not None and reference_value is not None:
        equal = numbers_equal(
            predicted_value,
            reference_value,
            tolerance,
            predicted_percent=has_percent(extracted),
            reference_percent=has_percent(reference),
        )
        return GradeResult(equal, extracted, "numeric" if equal else "mismatch")
    predicted_clean = clean_answer(extracted, keep_assignment=True)
    reference_clean = clean_answer(reference, keep_assignment=True)
    if max(len(predicted_clean), len(reference_clean)) > max_symbolic_chars:
        return GradeResult(False, extracted, "too_long")
    equal = answers_equal(predicted_clean, reference_clean, cheap_leaf(tolerance))
    if equal is None:
        return _SymbolicCheck(extracted, predicted_clean, reference_clean)
    return GradeResult(equal, extracted, "structural" if equal else "mismatch")


def grade(
    response: str,
    reference: str,
    *,
    finish_reason: str | None = None,
    fallback_last_number: bool = True,
    boxes: BoxMode = "all",
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    timeout_s: float | None = 5.0,
    max_symbolic_chars: int = 2000,
    question: str | None = None,
) -> GradeResult:
    """Grade one response against a reference answer, all in the calling process.

    Inputs: `response`, the model output (or any solution text); `reference`, the reference
    final answer (e.g. `"18"`, `"\\frac{1}{2}"`); `finish_reason`, the generation's finish
    reason ("length" or "abort" mean truncated, graded incorrect); `fallback_last_number`, allow
    the last number of the response as its answer; `tolerance`, for the numeric check;
    `timeout_s`, soft limit of the symbolic check (SIGALRM, main thread only);
    `max_symbolic_chars`, longer answers are not parsed (reason "too_long"); `question`, the
    question the response answers (None: unknown), which lets the grader refuse an answer that
    only restates one of its expressions (reason "restated", see `restatement.py`).
    Output: a GradeResult. The symbolic check runs in this process, so a pathological
    expression that blocks inside C code can still hang it: grade untrusted model output with
    `Grader`, which adds a hard per-item limit in worker processes.
    """
    if boxes not in BOX_MODES:
        raise ValueError(f"boxes must be one of {BOX_MODES}, got {boxes!r}")
    outcome = _cheap_grade(
        response, reference, finish_reason, fallback_last_number, boxes, tolerance, max_symbolic_chars, question
    )
    if isinstance(outcome, GradeResult):
        return outcome
    reason = symbolic_equal(outcome.predicted, outcome.reference, timeout_s, tolerance)
    return GradeResult(reason == "symbolic", outcome.extracted, reason + outcome.suffix)


GradeItem = Mapping[str, Any] | Sequence[Any]


def _unpack(item: GradeItem) -> tuple[str, str, str | None, str | None]:
    """(response, reference, finish_reason, question) from a dict or a 2-, 3- or 4-tuple."""
    if isinstance(item, Mapping):
        return item["response"], item["reference"], item.get("finish_reason"), item.get("question")
    if len(item) == 2:
        return item[0], item[1], None, None
    if len(item) == 3:
        return item[0], item[1], item[2], None
    response, reference, finish_reason, question = item
    return response, reference, finish_reason, question


def _address_space_bytes() -> int | None:
    """Virtual memory size of this process (Linux `/proc/self/statm`), or None if unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def _init_worker(memory_limit_mb: int | None) -> None:
    """Worker-process initializer: cap the address space, then import and warm up math-verify.

    The cap is `memory_limit_mb` on top of what the worker already maps after start-up (which
    depends on what the parent's main module imports), so it bounds one expression's growth.
    """
    current = _address_space_bytes()
    if memory_limit_mb is not None and current is not None:
        limit = current + memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    preload()


class Grader:
    """Batch grader with a hard per-item time limit: symbolic checks run in worker processes.

    Extraction, normalization, exact and numeric checks run in the calling process (cheap);
    only pairs that need math-verify go to a `pebble.ProcessPool` started with the "spawn"
    method (safe under Dagster, pytest and threads). A worker that runs past `timeout_s` is
    killed and replaced; the item gets reason "timeout". A worker that dies (e.g. out of memory)
    gives "error:worker_died". Identical pending pairs are checked once.

    Use as a context manager (`with Grader() as grader: ...`) or call `close()`; the pool is
    started on the first batch that needs it.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        workers: int = 2,
        fallback_last_number: bool = True,
        boxes: BoxMode = "all",
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        max_symbolic_chars: int = 2000,
        memory_limit_mb: int | None = 2048,
    ) -> None:
        """Configure the grader; no process is started yet.

        Parameters: `timeout_s`, limit per symbolic check in seconds (> 0); `workers`, number of
        worker processes (>= 1); `fallback_last_number`, allow the last number of a response as
        its answer; `boxes`, "all" (several boxes at the end that together form the answer are
        one answer, the default) or "last" (only the last box); `tolerance`, relative/absolute
        tolerance of the numeric check;
        `max_symbolic_chars`, answers longer than this (after cleaning) are not parsed and get
        reason "too_long"; `memory_limit_mb`, extra address space each worker may map beyond its
        start-up size (Linux; None: no cap); past it, an item gets "error:MemoryError".
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if boxes not in BOX_MODES:
            raise ValueError(f"boxes must be one of {BOX_MODES}, got {boxes!r}")
        self.timeout_s = timeout_s
        self.workers = workers
        self.fallback_last_number = fallback_last_number
        self.boxes = boxes
        self.tolerance = tolerance
        self.max_symbolic_chars = max_symbolic_chars
        self.memory_limit_mb = memory_limit_mb
        self._pool: ProcessPool | None = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (if started). The grader can still be used afterwards:
        the next batch that needs the pool starts a new one."""
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def _ensure_pool(self) -> ProcessPool:
        if self._pool is None:
            self._pool = ProcessPool(
                max_workers=self.workers,
                initializer=_init_worker,
                initargs=(self.memory_limit_mb,),
                context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    def grade(
        self, response: str, reference: str, finish_reason: str | None = None, question: str | None = None
    ) -> GradeResult:
        """Grade one response; same as `grade_many([(response, reference, finish_reason, question)])[0]`."""
        return self.grade_many([(response, reference, finish_reason, question)])[0]

    def grade_many(self, items: Iterable[GradeItem]) -> list[GradeResult]:
        """Grade a batch; results are in the order of `items`.

        Input: an iterable of dicts with keys "response", "reference" and optional
        "finish_reason" and "question", or of tuples `(response, reference)` / `(response,
        reference, finish_reason)` / `(response, reference, finish_reason, question)`; with the
        question, an answer that only restates one of its expressions is refused ("restated").
        Output: one GradeResult per item. Never raises for a bad expression:
        each symbolic check holds a worker for at most `timeout_s` (its own alarm), or
        `timeout_s` + 0.5 s plus pebble's 3 s SIGTERM-to-SIGKILL grace if the worker cannot
        respond (e.g. stuck in C code); a killed worker is replaced.
        """
        outcomes: list[GradeResult | _SymbolicCheck] = []
        for item in items:
            response, reference, finish_reason, question = _unpack(item)
            outcomes.append(
                _cheap_grade(
                    response,
                    reference,
                    finish_reason,
                    self.fallback_last_number,
                    self.boxes,
                    self.tolerance,
                    self.max_symbolic_chars,
                    question,
                )
            )
        return self._resolve(outcomes)

    def _resolve(self, outcomes: list[GradeResult | _SymbolicCheck]) -> list[GradeResult]:
        """Run the symbolic checks still pending (each distinct pair once) and return verdicts."""
        pending = {
            (outcome.predicted, outcome.reference) for outcome in outcomes if isinstance(outcome, _SymbolicCheck)
        }
        reasons = self._check_symbolic(sorted(pending))
        return [
            outcome
            if isinstance(outcome, GradeResult)
            else GradeResult(
                reasons[(outcome.predicted, outcome.reference)] == "symbolic",
                outcome.extracted,
                reasons[(outcome.predicted, outcome.reference)] + outcome.suffix,
            )
            for outcome in outcomes
        ]

    def same_answer_many(self, pairs: Iterable[tuple[str, str]]) -> list[GradeResult]:
        """Whether each pair of already extracted answers is the same answer, by the same checks as
        `grade_many` (exact, numeric with tolerance, symbolic in the worker pool with the hard time
        limit), skipping extraction. Input: (answer, other answer) pairs. Output: one GradeResult
        per pair; `correct` is the verdict, `extracted` the first answer of the pair."""
        outcomes = [_compare_answers(first, second, self.tolerance, self.max_symbolic_chars) for first, second in pairs]
        return self._resolve(outcomes)

    def _check_symbolic(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Run math-verify on each (predicted, reference) pair in the pool; reason per pair."""
        if not pairs:
            return {}
        pool = self._ensure_pool()
        futures: dict[tuple[str, str], Future[str]] = {
            pair: pool.schedule(
                symbolic_equal,
                args=(pair[0], pair[1], self.timeout_s, self.tolerance),
                timeout=self.timeout_s + _HARD_LIMIT_GRACE_S,
            )
            for pair in pairs
        }
        reasons: dict[tuple[str, str], str] = {}
        for pair, future in futures.items():
            try:
                reasons[pair] = future.result()
            except FutureTimeout:
                reasons[pair] = "timeout"
            except ProcessExpired:
                reasons[pair] = "error:worker_died"
            except Exception as error:  # noqa: BLE001 - e.g. a pickling failure
                reasons[pair] = f"error:{type(error).__name__}"
        return reasons
