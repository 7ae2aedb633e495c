"""Running a batch of requests through an engine and the ledger, with progress and statistics.

`run_requests` looks every request up in the ledger, generates only the missing ones, commits each
result as it arrives, logs a progress line (done/total, rate, ETA) at a steady interval, and fails
only when the share of failed requests passes a limit, naming the failed rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

from mathdata_pipeline.engines.base import Completion, Engine, Request, RequestError, TokenScore, canonical_prompt
from mathdata_pipeline.engines.ledger import RequestLedger, request_key, score_key

Result = Completion | RequestError
# How plain method modules generate: `generate(requests, row_ids) -> results` (the `llm` resource binds it).
GenerateFn = Callable[[Sequence[Request], Sequence[str] | None], list[Result]]


class ErrorBudgetExceeded(RuntimeError):
    """More requests failed than the configured share allows; the message names them."""


@dataclass
class GenerationStats:
    """Counters of one run; `as_metadata` gives the CONVENTIONS.md metadata keys."""

    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generated_tokens: int = 0
    wall_seconds: float = 0.0

    @classmethod
    def combine(cls, parts: Sequence[GenerationStats]) -> GenerationStats:
        """The counters of several runs added up (e.g. the rounds of one materialization)."""
        return cls(**{f.name: sum(getattr(p, f.name) for p in parts) for f in fields(cls)})

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens generated in this run (cache hits excluded) per wall-clock second."""
        return self.generated_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_metadata(self) -> dict[str, float | int]:
        """requests, cache_hits, errors, prompt_tokens, completion_tokens, tokens_per_second, wall_seconds."""
        data = asdict(self)
        data.pop("generated_tokens")
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        data["wall_seconds"] = round(self.wall_seconds, 2)
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
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log(f"{self.label}: {self.done}/{self.total} done, {rate:.2f}/s, ETA {eta:.0f}s")


def run_requests(
    engine: Engine,
    ledger: RequestLedger,
    requests: Sequence[Request],
    *,
    row_ids: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
    max_error_share: float = 0.05,
) -> tuple[list[Result], GenerationStats]:
    """Generate `requests`, reusing every result already in `ledger`.

    Inputs: the engine; the ledger; the requests; `row_ids`, names of the rows the requests belong
    to (used in error messages; default the request index); `log`, where progress lines go;
    `progress_interval` in seconds; `max_error_share`, the share of failed requests above which
    ErrorBudgetExceeded is raised (after every result has been committed).
    Output: (results aligned with `requests`, statistics). Empty completions become
    RequestError("empty_completion").
    """
    started = time.monotonic()
    stats = GenerationStats(requests=len(requests))
    keys = [request_key(engine.info, canonical_prompt(r, engine.render(r)), r.params) for r in requests]
    results: list[Result | None] = [None] * len(requests)
    cached = ledger.lookup(keys)
    todo: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        if key in cached:
            results[index] = cached[key]
            stats.cache_hits += 1
        else:
            todo.setdefault(key, []).append(index)
    pending = [indices[0] for indices in todo.values()]
    progress = Progress(len(requests), log, progress_interval)
    progress.advance(stats.cache_hits)
    for position, result in engine.generate([requests[i] for i in pending]):
        first = pending[position]
        if isinstance(result, Completion) and not result.text.strip():
            result = RequestError(
                "empty_completion", f"{result.completion_tokens} tokens, finish_reason={result.finish_reason}"
            )
        ledger.record(keys[first], engine.info, requests[first].params, result)
        if isinstance(result, Completion):
            stats.generated_tokens += result.completion_tokens
        for index in todo[keys[first]]:
            results[index] = result
        progress.advance(len(todo[keys[first]]))
    progress.advance(0, force=True)
    missing = [i for i, r in enumerate(results) if r is None]
    for index in missing:  # an engine that stopped early: count those rows as failed, never drop them
        results[index] = RequestError("engine_error", "engine returned no result", retryable=True)
    for result in results:
        if isinstance(result, Completion):
            stats.prompt_tokens += result.prompt_tokens
            stats.completion_tokens += result.completion_tokens
        else:
            stats.errors += 1
    stats.wall_seconds = time.monotonic() - started
    _enforce_error_budget(results, row_ids, max_error_share)
    return results, stats  # type: ignore[return-value]


def run_scores(
    engine: Engine,
    ledger: RequestLedger,
    pairs: Sequence[tuple[str, str]],
    *,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
) -> tuple[list[TokenScore], GenerationStats]:
    """Score (prompt, completion) pairs with `engine.score`, reusing every score already in `ledger`.

    Output: (TokenScores aligned with `pairs`, statistics: `requests`, `cache_hits`, `prompt_tokens`
    = scored tokens, `wall_seconds`). A pair that cannot be scored raises (bad input, not a fault).
    """
    started = time.monotonic()
    stats = GenerationStats(requests=len(pairs))
    keys = [score_key(engine.info, prompt, completion) for prompt, completion in pairs]
    found = ledger.lookup_scores(keys)
    stats.cache_hits = sum(key in found for key in keys)
    progress = Progress(len(pairs), log, progress_interval)
    progress.advance(stats.cache_hits)
    for key, (prompt, completion) in zip(keys, pairs):
        if key not in found:
            found[key] = engine.score(prompt, completion)
            ledger.record_score(key, engine.info, found[key])
            progress.advance(1)
    progress.advance(0, force=True)
    scores = [found[key] for key in keys]
    stats.prompt_tokens = sum(s.tokens for s in scores)
    stats.wall_seconds = time.monotonic() - started
    return scores, stats


def _enforce_error_budget(results: Sequence[Result | None], row_ids: Sequence[str] | None, max_share: float) -> None:
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, RequestError)]
    if results and len(failed) / len(results) > max_share:
        names = [f"{row_ids[i] if row_ids else i}: {r.reason} ({r.message[:80]})" for i, r in failed[:20]]
        more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
        raise ErrorBudgetExceeded(
            f"{len(failed)} of {len(results)} requests failed (limit {max_share:.0%}): " + "; ".join(names) + more
        )
