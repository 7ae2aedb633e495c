"""Requests through an engine and the ledger, with progress, statistics and self-healing retries.

`LedgerStream` is the streaming form: `submit` requests at any time; a request already in the
ledger comes back at once, the others as the engine finishes them, each committed to the ledger
the moment it arrives. An empty completion or a transient failure is tried again with a derived
seed (`base.retry_seed`; the attempt number travels with the result), up to `attempts_per_run`
engine calls per request in one run; an empty completion is stored as a failed attempt, so a rerun
continues with the next seed and no single request can block a partition forever.
`run_requests` runs a fixed batch through a LedgerStream and fails only when the share of
requests that still failed passes a limit, naming the failed rows. `run_scores` scores
(prompt, completion) pairs through the ledger in batches.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache

from mathdata_pipeline.engines.base import (
    Completion,
    Engine,
    Request,
    RequestError,
    Result,
    SamplingParams,
    TokenScore,
    canonical_prompt,
    with_attempt,
)
from mathdata_pipeline.engines.ledger import RequestLedger, request_key, score_key

# How plain method modules generate: `generate(requests, row_ids) -> results` (the `llm` resource binds it).
GenerateFn = Callable[[Sequence[Request], Sequence[str] | None], list[Result]]
_FAILED_ROWS_SHOWN = 20
_NO_PARAMS = SamplingParams()  # rendering a prompt does not depend on the sampling parameters


class ErrorBudgetExceeded(RuntimeError):
    """More requests failed than the configured share allows; the message names them."""


@dataclass
class GenerationStats:
    """Counters of one run; `as_metadata` gives the CONVENTIONS.md metadata keys.

    `retries`: engine calls beyond the first for a request (empty completions, transient faults).
    `ledgers`: rows in each ledger file used ({path: rows} after the run). `warnings`: lines about
    the ledgers for the asset's metadata (e.g. a ledger that vanished since the last run).
    """

    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generated_tokens: int = 0
    wall_seconds: float = 0.0
    retries: int = 0
    ledgers: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def combine(cls, parts: Sequence[GenerationStats]) -> GenerationStats:
        """The counters of several runs added up (e.g. the calls of one materialization); ledger
        rows are taken per file (the largest count), warnings once each."""
        summed = [f.name for f in fields(cls) if f.name not in ("ledgers", "warnings")]
        numbers = {name: sum(getattr(p, name) for p in parts) for name in summed}
        ledgers: dict[str, int] = {}
        for part in parts:
            for path, rows in part.ledgers.items():
                ledgers[path] = max(rows, ledgers.get(path, 0))
        warnings = list(dict.fromkeys(w for p in parts for w in p.warnings))
        return cls(**numbers, ledgers=ledgers, warnings=warnings)

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens generated in this run (cache hits excluded) per wall-clock second."""
        return self.generated_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_metadata(self) -> dict[str, float | int | str]:
        """requests, cache_hits, errors, prompt_tokens, completion_tokens, tokens_per_second,
        wall_seconds, retries, ledger_rows (when a ledger was used) and ledger_warning (text, only
        when there is one)."""
        data: dict[str, float | int | str] = {
            k: v for k, v in asdict(self).items() if k not in ("generated_tokens", "ledgers", "warnings")
        }
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        data["wall_seconds"] = round(self.wall_seconds, 2)
        if self.ledgers:
            data["ledger_rows"] = sum(self.ledgers.values())
        if self.warnings:
            data["ledger_warning"] = " | ".join(self.warnings)
        return data


class Progress:
    """Emits "done/total, rate, ETA" lines through `log` at most every `interval` seconds."""

    def __init__(self, total: int, log: Callable[[str], None], interval: float = 30.0, label: str = "requests"):
        self.total, self.log, self.interval, self.label = total, log, interval, label
        self.start = self.last = time.monotonic()
        self.done = 0

    def advance(self, count: int = 1, *, force: bool = False) -> None:
        """Count finished work and log when the interval has passed (or `force`)."""
        self.done += count
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            total = max(self.total, self.done)
            eta = (total - self.done) / rate if rate > 0 else float("inf")
            self.log(f"{self.label}: {self.done}/{total} done, {rate:.2f}/s, ETA {eta:.0f}s")


@dataclass
class _Attempt:
    """One submitted request on its way: which attempt it is at, and how many engine calls it made
    in this run."""

    tag: Hashable
    request: Request
    row_id: str
    attempt: int = 0
    tries: int = 0


def _heals(result: Result) -> bool:
    """Whether a failure is worth another attempt with a derived seed."""
    return isinstance(result, RequestError) and (result.retryable or result.reason == "empty_completion")


class LedgerStream:
    """Requests through the ledger and an engine stream (see the module docstring).

    Inputs: the engine; the open ledger; `attempts_per_run`, engine calls per request at most in
    this run (>= 1); `log` and `progress_interval` for progress lines; `total`, the expected number
    of requests (for the ETA; grows as more are submitted). `capacity` is the engine's.
    `stats` counts the stream's work; `failed_rows` names the first failed requests.
    """

    def __init__(
        self,
        engine: Engine,
        ledger: RequestLedger,
        *,
        attempts_per_run: int = 2,
        log: Callable[[str], None] = print,
        progress_interval: float = 30.0,
        total: int = 0,
    ):
        if attempts_per_run < 1:
            raise ValueError(f"attempts_per_run must be at least 1, got {attempts_per_run}")
        self.engine, self.ledger, self.attempts_per_run = engine, ledger, attempts_per_run
        self._stream = engine.stream()
        self.capacity = self._stream.capacity
        self._ready: deque[tuple[Hashable, Result]] = deque()
        self._sent: dict[str, list[_Attempt]] = {}  # key being generated -> the attempts waiting for it
        self._key_of: dict[Hashable, str] = {}  # tag of a sent attempt -> its key
        self._outstanding = 0
        self.stats = GenerationStats()
        self.failed_rows: list[str] = []
        self._started = time.monotonic()
        self._progress = Progress(total, log, progress_interval)
        self._prompt = lru_cache(maxsize=8192)(self._render)

    def _render(self, prompt: str | None, messages: tuple | None) -> str:
        request = Request(params=_NO_PARAMS, prompt=prompt, messages=messages)
        return canonical_prompt(request, self.engine.render(request))

    def key(self, request: Request) -> str:
        """The ledger key of `request` (its prompt as the engine renders it, its parameters)."""
        return request_key(self.engine.info, self._prompt(request.prompt, request.messages), request.params)

    def submit(self, tag: Hashable, request: Request, row_id: str | None = None) -> None:
        """Queue `request`; its result comes back from `next_result` with `tag`. `row_id` names it
        in error messages (default: the tag)."""
        self.stats.requests += 1
        self._progress.total = max(self._progress.total, self.stats.requests)
        self._outstanding += 1
        self._resolve(_Attempt(tag, request, row_id if row_id is not None else str(tag)))

    def _resolve(self, attempt: _Attempt) -> None:
        """Serve `attempt` from the ledger, join an identical request in flight, or send it."""
        while True:
            request = with_attempt(attempt.request, attempt.attempt)
            key = self.key(request)
            if key in self._sent:
                self._sent[key].append(attempt)
                return
            found = self.ledger.get(key)
            if found is None:
                break
            if isinstance(found, RequestError) and found.reason == "empty_completion":
                attempt.attempt += 1  # a stored failed attempt: the next one has its own seed
                continue
            self._deliver(attempt, found, cached=attempt.tries == 0)
            return
        if attempt.tries:
            self.stats.retries += 1
        attempt.tries += 1
        self._sent[key] = [attempt]
        self._key_of[attempt.tag] = key
        self._stream.submit(key, request)

    def _deliver(self, attempt: _Attempt, result: Result, *, cached: bool) -> None:
        result = replace(result, attempt=attempt.attempt)
        if cached:
            self.stats.cache_hits += 1
        if isinstance(result, Completion):
            self.stats.prompt_tokens += result.prompt_tokens
            self.stats.completion_tokens += result.completion_tokens
        else:
            self.stats.errors += 1
            if len(self.failed_rows) < _FAILED_ROWS_SHOWN:
                self.failed_rows.append(f"{attempt.row_id}: {result.reason} ({result.message[:80]})")
        self._outstanding -= 1
        self._progress.advance(1)
        self._ready.append((attempt.tag, result))

    def next_result(self) -> tuple[Hashable, Result]:
        """The next finished (tag, result), committed to the ledger; raises LookupError when
        nothing is pending."""
        while not self._ready:
            if not self._stream.pending:
                raise LookupError("no request is pending")
            key, result = self._stream.next_result()
            waiting = self._sent.pop(key)
            self._key_of.pop(waiting[0].tag, None)
            if isinstance(result, Completion) and not result.text.strip():
                result = RequestError(
                    "empty_completion", f"{result.completion_tokens} tokens, finish_reason={result.finish_reason}"
                )
            first = waiting[0]
            self.ledger.record(key, self.engine.info, with_attempt(first.request, first.attempt).params, result)
            if isinstance(result, Completion):
                self.stats.generated_tokens += result.completion_tokens
            for attempt in waiting:
                if _heals(result) and attempt.tries < self.attempts_per_run:
                    attempt.attempt += 1
                    self._resolve(attempt)
                else:
                    self._deliver(attempt, result, cached=False)
        return self._ready.popleft()

    @property
    def pending(self) -> int:
        """Requests submitted whose result has not been returned yet."""
        return self._outstanding + len(self._ready)

    @property
    def ready(self) -> int:
        """Results that `next_result` returns without waiting (ledger hits, finished requests)."""
        return len(self._ready)

    def cancel(self, tag: Hashable) -> bool:
        """Withdraw the request `tag` if it is still waiting for the engine alone; True when its
        result will not come back from `next_result`."""
        key = self._key_of.get(tag)
        if key is None or len(self._sent[key]) > 1 or not self._stream.cancel(key):
            return False
        del self._sent[key], self._key_of[tag]
        self._outstanding -= 1
        self.stats.requests -= 1
        return True

    def check_error_budget(self, max_share: float) -> None:
        """Raise ErrorBudgetExceeded naming the failed rows when more than `max_share` of the
        requests submitted so far failed."""
        if self.stats.requests and self.stats.errors / self.stats.requests > max_share:
            more = self.stats.errors - len(self.failed_rows)
            raise ErrorBudgetExceeded(
                f"{self.stats.errors} of {self.stats.requests} requests failed (limit {max_share:.0%}) "
                f"after up to {self.attempts_per_run} attempts each: "
                + "; ".join(self.failed_rows)
                + (f" and {more} more" if more > 0 else "")
            )

    def close(self) -> None:
        """Cancel what is still in flight and finish the statistics."""
        self._stream.close()
        self.stats.wall_seconds = time.monotonic() - self._started
        self._progress.advance(0, force=True)

    def __enter__(self) -> LedgerStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_requests(
    engine: Engine,
    ledger: RequestLedger,
    requests: Sequence[Request],
    *,
    row_ids: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
    max_error_share: float = 0.05,
    attempts_per_run: int = 2,
) -> tuple[list[Result], GenerationStats]:
    """Generate `requests`, reusing every result already in `ledger`.

    Inputs: the engine; the ledger; the requests; `row_ids`, names of the rows the requests belong
    to (used in error messages; default the request index); `log`, where progress lines go;
    `progress_interval` in seconds; `max_error_share`, the share of failed requests above which
    ErrorBudgetExceeded is raised (after every result has been committed); `attempts_per_run`,
    engine calls per request at most (empty completions and transient faults are retried with a
    derived seed). Output: (results aligned with `requests`, statistics).
    """
    results: list[Result | None] = [None] * len(requests)
    with LedgerStream(
        engine, ledger, attempts_per_run=attempts_per_run, log=log, progress_interval=progress_interval
    ) as stream:
        for index, request in enumerate(requests):
            stream.submit(index, request, row_ids[index] if row_ids else str(index))
        while stream.pending:
            index, result = stream.next_result()
            results[index] = result
    for index, result in enumerate(results):
        if result is None:  # an engine that stopped early: count those rows as failed, never drop them
            results[index] = RequestError("engine_error", "engine returned no result", retryable=True)
            stream.stats.errors += 1
    stream.check_error_budget(max_error_share)
    return results, stream.stats  # type: ignore[return-value]


def run_scores(
    engine: Engine,
    ledger: RequestLedger,
    pairs: Sequence[tuple[str, str]],
    *,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
    batch_pairs: int = 0,
) -> tuple[list[TokenScore | None], GenerationStats]:
    """Score (prompt, completion) pairs with `engine.score_many`, reusing every score already in
    `ledger`.

    The pairs not in the ledger are sorted by prompt (pairs that share a prefix, such as one
    demonstration in front of many anchors, are scored one after another, so the engine reuses
    the prefix) and sent `batch_pairs` at a time (0 = max(64, 4 x the engine's capacity)); each
    batch is committed when it is scored. Output: (a TokenScore per pair, or None for a pair that
    cannot be scored, such as one longer than the context; statistics: `requests`, `cache_hits`,
    `errors` = pairs without a score, `prompt_tokens` = scored tokens, `wall_seconds`).
    """
    started = time.monotonic()
    stats = GenerationStats(requests=len(pairs))
    keys = [score_key(engine.info, prompt, completion) for prompt, completion in pairs]
    found: dict[str, TokenScore | None] = dict(ledger.lookup_scores(keys))
    stats.cache_hits = sum(key in found for key in keys)
    todo = sorted({key: pair for key, pair in zip(keys, pairs) if key not in found}.items(), key=lambda kv: kv[1])
    batch = batch_pairs or max(64, 4 * engine.capacity)
    progress = Progress(len(pairs), log, progress_interval, label="scores")
    progress.advance(stats.cache_hits)
    for start in range(0, len(todo), batch):
        part = todo[start : start + batch]
        for (key, _), score in zip(part, engine.score_many([pair for _, pair in part]), strict=True):
            if isinstance(score, TokenScore):
                ledger.record_score(key, engine.info, score)
                found[key] = score
            else:
                found[key] = None
        progress.advance(len(part))
    progress.advance(0, force=True)
    scores = [found[key] for key in keys]
    stats.errors = sum(score is None for score in scores)
    stats.prompt_tokens = sum(score.tokens for score in scores if score is not None)
    stats.wall_seconds = time.monotonic() - started
    return scores, stats
