"""Event-driven DARS: keep the engine's batch full, decide by sample index, never wait for a round.

`DarsPlanner` is the bookkeeping (no I/O). It runs a difficulty pass (`n_d` samples per query),
then DARS with the targets, `n_max` and stop rule of `dars.DarsConfig`. Sample k of a query always
has the same seed, and a query's fate is decided on the *prefix* of its samples in index order:
it stops at the smallest m such that samples 0..m meet its target (or m + 1 reaches its cap).
Samples are kept only when they join that prefix, so the samples kept are the same however the
engine interleaves requests; samples drawn beyond the stop point (in flight, or graded out of
order, when the query closes) are `overshoot`.

Policies: "stream" (default) tops up after every graded result: first queries whose samples in
flight are fewer than they are expected to need (remaining correct answers / estimated pass
rate), then, when slots are still free, one more sample each for the open queries in turn
(speculation keeps a wide batch full at the tail; the excess is overshoot). "rounds" is the
reference implementation's loop for comparison: each open query gets `samples_per_round`
samples, and the next round waits until the whole round is graded.

`run_controller` drives a planner against an open request stream (`engines.runner.LedgerStream`
or anything with `submit`, `next_result`, `pending`) and a grading queue (`dart.grading`):
verdicts already in the ledger for the same grader version are reused, new ones are stored.
"""

from __future__ import annotations

import resource
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from mathdata_pipeline.dart import dars
from mathdata_pipeline.engines.base import Completion, Request, Result
from mathdata_pipeline.engines.ledger import RequestLedger, Verdict, verdict_key

Policy = Literal["stream", "rounds"]


class DarsPlanner:
    """Which (query, sample index) to draw next, and which graded samples are kept.

    Inputs: `n_queries`; `n_d`, difficulty samples per query (>= 1); `config`, the DARS settings
    (None: the difficulty pass only); `policy` ("stream" or "rounds"); `speculate`, whether the
    stream policy fills free slots beyond the expected need. Use `take` to get submissions,
    `graded` to report each verdict (it returns the rows that joined their query's prefix, to be
    written), `finished` to know when every query has stopped.
    """

    def __init__(
        self,
        n_queries: int,
        n_d: int,
        config: dars.DarsConfig | None,
        *,
        policy: Policy = "stream",
        speculate: bool = True,
    ):
        if n_d < 1:
            raise ValueError(f"n_d must be at least 1, got {n_d}")
        if policy not in ("stream", "rounds"):
            raise ValueError(f"policy must be 'stream' or 'rounds', got {policy!r}")
        self.n_queries, self.n_d, self.config, self.policy, self.speculate = n_queries, n_d, config, policy, speculate
        self.phase = "difficulty"
        self.next_index = [0] * n_queries
        self.prefix = [0] * n_queries
        self.prefix_correct = [0] * n_queries
        self.beyond = [0] * n_queries
        self.beyond_correct = [0] * n_queries
        self.cap = [n_d] * n_queries
        self.target = [0] * n_queries
        self.open = [True] * n_queries
        self.stop_reason = [""] * n_queries
        self.fail_rate = np.full(n_queries, np.nan)
        self.overshoot = 0
        self.rounds = 0
        self.outstanding = 0
        self._extra = 1 if config is not None and config.strict_stop else 0
        self._open_count = n_queries
        self._difficulty_left = n_queries
        self._waiting: dict[tuple[int, int], tuple[bool, Any]] = {}
        self._hungry: deque[int] = deque(range(n_queries))
        self._queued = [True] * n_queries
        self._turns: deque[int] = deque()
        self.to_cancel: list[tuple[int, int]] = []  # in flight for a query that stopped: withdraw if possible
        if n_queries == 0:
            self.phase = "done"

    @property
    def finished(self) -> bool:
        """True when every query has stopped (nothing more will be kept)."""
        return self.phase == "done"

    def is_open(self, query: int) -> bool:
        """Whether `query` is still drawing samples."""
        return self.open[query]

    def take(self, slots: int) -> list[tuple[int, int]]:
        """The next (query, sample index) pairs to draw: at most `slots` under the stream policy;
        under the rounds policy a whole round once the previous one is graded, else nothing."""
        picked = self._take_round() if self.policy == "rounds" else self._take_stream(slots)
        self.outstanding += len(picked)
        return picked

    def _take_stream(self, slots: int) -> list[tuple[int, int]]:
        picked: list[tuple[int, int]] = []
        speculating = self.speculate and self.phase == "dars"
        while len(picked) < slots:
            if self._hungry:
                query = self._hungry.popleft()
                self._queued[query] = False
                if not self._wants(query):
                    continue
            elif speculating and self._turns:
                query = self._turns.popleft()
                if not self.open[query] or self.next_index[query] >= self.cap[query]:
                    continue  # leaves the rotation for good
                self._turns.append(query)
            else:
                break
            picked.append((query, self.next_index[query]))
            self.next_index[query] += 1
            if not self._queued[query] and self._wants(query):
                self._hungry.append(query)
                self._queued[query] = True
        return picked

    def _take_round(self) -> list[tuple[int, int]]:
        if self.outstanding or self.finished:
            return []
        per_query = self.n_d if self.phase == "difficulty" else self.config.samples_per_round
        picked = []
        for query in range(self.n_queries):
            if self.open[query]:
                for _ in range(min(per_query, self.cap[query] - self.next_index[query])):
                    picked.append((query, self.next_index[query]))
                    self.next_index[query] += 1
        self.rounds += 1
        return picked

    def withdrawn(self, query: int, index: int) -> None:
        """Sample `index` of a stopped `query` was cancelled before it came back: it is no longer
        outstanding (it stays counted in `overshoot`)."""
        self.outstanding -= 1

    def _wants(self, query: int) -> bool:
        """Whether `query` should get another sample now: under its cap, and (with a target) with
        fewer samples in flight than the correct answers it still needs divided by its estimated
        pass rate (Laplace-smoothed over everything graded so far)."""
        if not self.open[query] or self.next_index[query] >= self.cap[query]:
            return False
        if self.phase == "difficulty" or self.target[query] == 0:
            return True
        known = self.prefix_correct[query] + self.beyond_correct[query]
        remaining = self.target[query] + self._extra - known
        if remaining <= 0:
            return False
        graded = self.prefix[query] + self.beyond[query]
        in_flight = self.next_index[query] - graded
        return in_flight * (known + 1) < remaining * (graded + 2)

    def graded(self, query: int, index: int, correct: bool, row: Any = None) -> list[Any]:
        """Report the verdict of sample `index` of `query` (a failed request is incorrect).
        Returns the rows that joined the query's prefix, in index order: the rows to keep. A
        sample of a query that has already stopped is overshoot and returns nothing."""
        self.outstanding -= 1
        if not self.open[query]:
            return []
        if index != self.prefix[query]:
            self._waiting[(query, index)] = (correct, row)
            self.beyond[query] += 1
            self.beyond_correct[query] += correct
            self._requeue(query)
            return []
        kept = [row]
        still_open = self._advance(query, correct)
        while still_open and (query, self.prefix[query]) in self._waiting:
            correct, row = self._waiting.pop((query, self.prefix[query]))
            self.beyond[query] -= 1
            self.beyond_correct[query] -= correct
            kept.append(row)
            still_open = self._advance(query, correct)
        if still_open:
            self._requeue(query)
        return kept

    def _requeue(self, query: int) -> None:
        if not self._queued[query] and self.phase != "done" and self._wants(query):
            self._hungry.append(query)
            self._queued[query] = True

    def _advance(self, query: int, correct: bool) -> bool:
        """One more sample joins the prefix; returns whether the query is still open."""
        self.prefix[query] += 1
        self.prefix_correct[query] += correct
        if self.phase == "difficulty":
            if self.prefix[query] == self.n_d:
                self._difficulty_left -= 1
                if not self._difficulty_left:
                    self._start_dars()
            return self.open[query]
        reason = self._stop_reason(query)
        if reason:
            self._close(query, reason)
            return False
        return True

    def _stop_reason(self, query: int) -> str:
        target, correct = self.target[query], self.prefix_correct[query]
        if target > 0 and correct >= target + self._extra:
            return "target_reached"
        if self.prefix[query] >= self.cap[query]:
            return "vrt_done" if self.config.strategy == "vrt" else "n_max"
        return ""

    def _close(self, query: int, reason: str) -> None:
        self.open[query] = False
        self.stop_reason[query] = reason
        self.overshoot += self.next_index[query] - self.prefix[query]
        for index in range(self.prefix[query], self.next_index[query]):
            if self._waiting.pop((query, index), None) is None:
                self.to_cancel.append((query, index))
        self.beyond[query] = self.beyond_correct[query] = 0
        self._open_count -= 1
        if not self._open_count:
            self.phase = "done"

    def _start_dars(self) -> None:
        """The difficulty pass is complete: fail rates, targets and caps, then stop the queries
        that already meet them (or fall outside the band)."""
        if self.config is None:
            self.phase = "done"
            return
        trials, correct = np.asarray(self.prefix), np.asarray(self.prefix_correct)
        self.fail_rate = dars.difficulty_from_samples(trials, correct)
        self.target = dars.targets(self.fail_rate, self.config).tolist()
        cap = self.config.vrt_trials if self.config.strategy == "vrt" else self.config.n_max
        self.cap = [cap] * self.n_queries
        self.phase = "dars"
        for query in range(self.n_queries):
            if self.config.strategy == "band" and self.target[query] == 0:
                self._close(query, "out_of_band")
            elif reason := self._stop_reason(query):
                self._close(query, reason)
        open_queries = [q for q in range(self.n_queries) if self.open[q]]
        self._hungry = deque(open_queries)
        self._queued = [False] * self.n_queries
        for query in open_queries:
            self._queued[query] = True
        self._turns = deque(open_queries)

    def state(self, query_ids: Sequence[str]) -> dars.DarsState:
        """The final counters as a `dars.DarsState` (trials and correct answers of the kept prefix)
        for `dars.summary`."""
        trials = np.asarray(self.prefix, dtype=np.int64)
        correct = np.asarray(self.prefix_correct, dtype=np.int64)
        return dars.DarsState(
            config=self.config or dars.DarsConfig("vrt", vrt_trials=self.n_d),
            query_ids=tuple(query_ids),
            index={qid: i for i, qid in enumerate(query_ids)},
            fail_rate=self.fail_rate if self.config is not None else dars.difficulty_from_samples(trials, correct),
            target=np.asarray(self.target, dtype=np.int64),
            max_trials=np.asarray(self.cap, dtype=np.int64),
            n_trials=trials,
            n_correct=correct,
            stop_reason=np.asarray(self.stop_reason, dtype="<U14"),
        )


class Stream(Protocol):
    """What `run_controller` needs of a request stream (`engines.runner.LedgerStream` has it)."""

    capacity: int

    def submit(self, tag: Hashable, request: Request, row_id: str | None = None) -> None: ...

    def next_result(self) -> tuple[Hashable, Result]: ...

    @property
    def pending(self) -> int: ...

    @property
    def ready(self) -> int: ...

    def cancel(self, tag: Hashable) -> bool: ...


class Grading(Protocol):
    """What `run_controller` needs of a grader (`dart.grading.GradingQueue` has it)."""

    pending: int

    def submit(
        self, tag: Hashable, response: str, reference: str, finish_reason: str | None, question: str | None = None
    ) -> None: ...

    def poll(self) -> list: ...

    def wait(self) -> list: ...


@dataclass
class ControllerReport:
    """What a controller run did: samples submitted, kept (written), overshoot (of which cancelled
    before the engine finished them), verdicts reused from the ledger and graded now, rounds
    (rounds policy), in-flight target, wall seconds, and `grade_reasons`: the kept samples counted
    by `reason_code` of their verdict (exact, numeric, mismatch, no_answer, truncated, timeout, ...,
    request_failed)."""

    submitted: int = 0
    kept: int = 0
    overshoot: int = 0
    cancelled: int = 0
    verdicts_reused: int = 0
    graded: int = 0
    rounds: int = 0
    max_in_flight: int = 0
    wall_seconds: float = 0.0
    grade_reasons: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)


REQUEST_FAILED = "request_failed"


def sample_reason(verdict: Verdict | None) -> str:
    """The grader's reason of one sample as stored on its row: the verdict's reason ("exact",
    "mismatch@boxes", "no_answer", "truncated", "timeout", ...), or "request_failed" when the
    request produced no completion (no verdict; the row's `error` says why)."""
    return REQUEST_FAILED if verdict is None else verdict.reason


def reason_code(reason: str) -> str:
    """A sample reason without the extraction step it may name ("mismatch@boxes" -> "mismatch")."""
    return reason.split("@", 1)[0]


KeepFn = Callable[[int, int, Request, Result, Verdict | None], None]


def run_controller(
    planner: DarsPlanner,
    stream: Stream,
    grading: Grading,
    *,
    request_for: Callable[[int, int], Request],
    reference_for: Callable[[int], str],
    keep: KeepFn | None,
    max_in_flight: int,
    verdicts: RequestLedger | None = None,
    grader_version: str = "",
    log: Callable[[str], None] = print,
    log_interval: float = 30.0,
    question_for: Callable[[int], str] | None = None,
) -> ControllerReport:
    """Drive `planner` until every query has stopped.

    Inputs: the planner; an open request stream; a grading queue; `request_for(query, index)`, the
    request of a sample; `reference_for(query)`, its reference answer; `keep(query, index, request,
    result, verdict)`, called for every kept sample in prefix order (None: keep nothing, e.g. a
    difficulty pass that only counts; the verdict is None for a failed request); `max_in_flight`,
    samples submitted and not yet graded at most (stream policy); `verdicts`, the ledger holding
    verdicts of `grader_version` (None: grade everything); `log` for a progress line every
    `log_interval` seconds; `question_for(query)`, the question text the grader sees (None: none,
    so answers restating the question are not refused). Output: a ControllerReport. Samples still
    in flight when the last query stops are left to the caller to cancel (by closing the stream); they are `overshoot`.
    """
    driver = _Driver(planner, stream, grading, request_for, reference_for, keep, verdicts, grader_version, question_for)
    driver.report.max_in_flight = max_in_flight
    started = last_log = time.monotonic()
    while not planner.finished:
        driver.top_up(max_in_flight)
        if planner.finished:
            break
        ready = grading.poll()
        if not ready:
            if stream.pending:
                (query, index), result = stream.next_result()
                driver.generated(query, index, result)
            elif grading.pending:
                ready = grading.wait()
            else:
                raise RuntimeError("DARS controller stalled: queries are open but nothing is in flight")
        for (query, index, result), grade in ready:
            driver.graded(query, index, result, Verdict(grade.correct, grade.extracted, grade.reason))
        if time.monotonic() - last_log >= log_interval:
            last_log = time.monotonic()
            log(
                f"DARS: {sum(planner.open)}/{planner.n_queries} queries open, {driver.report.kept} samples kept, "
                f"{planner.outstanding} in flight, overshoot {planner.overshoot}, {driver.report.submitted} submitted"
            )
    driver.report.overshoot, driver.report.rounds = planner.overshoot, planner.rounds
    driver.report.wall_seconds = time.monotonic() - started
    return driver.report


@dataclass
class _Driver:
    """The I/O side of `run_controller`: requests out, results and verdicts back to the planner."""

    planner: DarsPlanner
    stream: Stream
    grading: Grading
    request_for: Callable[[int, int], Request]
    reference_for: Callable[[int], str]
    keep: KeepFn | None
    verdicts: RequestLedger | None
    grader_version: str
    question_for: Callable[[int], str] | None = None
    report: ControllerReport = field(default_factory=ControllerReport)
    requests: dict[tuple[int, int], Request] = field(default_factory=dict)

    def top_up(self, max_in_flight: int) -> None:
        """Submit samples one at a time up to `max_in_flight` outstanding (a whole round under the
        rounds policy), taking each result the stream has at once (a ledger hit) before deciding
        the next, so a rerun served from the ledger asks for exactly the samples it keeps; then
        withdraw what is in flight for queries that stopped."""
        while self.planner.outstanding < max_in_flight or self.planner.policy == "rounds":
            picked = self.planner.take(1 if self.planner.policy == "stream" else 0)
            if not picked:
                break
            for query, index in picked:
                self.submit(query, index)
            while self.stream.ready:
                (query, index), result = self.stream.next_result()
                self.generated(query, index, result)
        self.withdraw()

    def withdraw(self) -> None:
        for query, index in self.planner.to_cancel:
            if self.stream.cancel((query, index)):
                self.requests.pop((query, index), None)
                self.planner.withdrawn(query, index)
                self.report.cancelled += 1
        self.planner.to_cancel.clear()

    def submit(self, query: int, index: int) -> None:
        request = self.request_for(query, index)
        self.requests[(query, index)] = request
        self.stream.submit((query, index), request, f"{query}#{index}")
        self.report.submitted += 1

    def generated(self, query: int, index: int, result: Result) -> None:
        """A generation result: overshoot of a stopped query, a failed request (incorrect), a
        verdict already in the ledger, or a response to grade."""
        if not self.planner.is_open(query):
            self.requests.pop((query, index), None)
            self.planner.graded(query, index, False)
            return
        if not isinstance(result, Completion):
            self.decided(query, index, result, None)
            return
        reference = self.reference_for(query)
        if self.verdicts is not None:
            stored = self.verdicts.get_verdict(self.verdict_key(query, result))
            if stored is not None:
                self.report.verdicts_reused += 1
                self.decided(query, index, result, stored)
                return
        question = self.question_for(query) if self.question_for else None
        self.grading.submit((query, index, result), result.text, reference, result.finish_reason, question)

    def verdict_key(self, query: int, result: Completion) -> str:
        """The ledger key of the verdict on `result`, an answer to `query`."""
        question = self.question_for(query) if self.question_for else ""
        reference = self.reference_for(query)
        return verdict_key(result.text, reference, result.finish_reason, self.grader_version, question)

    def graded(self, query: int, index: int, result: Completion, verdict: Verdict) -> None:
        """A fresh verdict: stored in the ledger with the grader version, then decided."""
        if self.verdicts is not None:
            self.verdicts.record_verdict(self.verdict_key(query, result), self.grader_version, verdict)
        self.report.graded += 1
        self.decided(query, index, result, verdict)

    def decided(self, query: int, index: int, result: Result, verdict: Verdict | None) -> None:
        request = self.requests.pop((query, index))
        correct = bool(verdict is not None and verdict.correct)
        for row in self.planner.graded(query, index, correct, (query, index, request, result, verdict)):
            self.report.kept += 1
            self.report.grade_reasons[reason_code(sample_reason(row[4]))] += 1
            if self.keep is not None:
                self.keep(*row)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
