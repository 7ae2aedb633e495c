"""The engine interface every backend implements, and the value types that cross it.

A `Request` is one sample: a prompt (raw text, or chat messages the engine renders with its
template), sampling parameters and an explicit seed. n samples of one prompt are n requests with
n seeds (see `derive_seed`); no backend relies on its own default seed.

Engines stream: `Engine.stream()` opens an `EngineStream` that takes requests at any time
(`submit`) and hands back each result as soon as it is done (`next_result`), so a caller can keep
an engine's batch full and commit every result the moment it arrives. `capacity` says how many
requests the engine works on at once (1 for the sequential llama.cpp engine; the batch width of
vLLM; the concurrency of an HTTP server, summed over replicas).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from mathdata_pipeline.common.text import stable_hash

Message = dict[str, str]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request. `seed` is required in spirit: derive it per sample."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int = 0

    def as_dict(self) -> dict:
        """A JSON-ready dict (stop as a list), keys in field order (written out: this is on the
        path of every ledger key and sample id, and `dataclasses.asdict` is slow)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Request:
    """One generation request: exactly one of `prompt` (raw text) or `messages` (chat)."""

    params: SamplingParams
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a Request takes exactly one of prompt= or messages=")

    @classmethod
    def chat(cls, messages: Sequence[Message], params: SamplingParams) -> Request:
        """A chat request from [{role, content}, …]."""
        return cls(params=params, messages=tuple((m["role"], m["content"]) for m in messages))

    def message_dicts(self) -> list[Message]:
        """The chat messages as [{role, content}, …] (empty for a raw prompt)."""
        return [{"role": r, "content": c} for r, c in (self.messages or ())]


@dataclass(frozen=True)
class Completion:
    """What an engine wrote for one request."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    attempt: int = 0  # 0 = the request's own seed; k > 0 = the k-th retry, seed `retry_seed(seed, k)`


@dataclass(frozen=True)
class RequestError:
    """A request that produced no usable completion.

    `reason` is one of: prompt_too_long, empty_completion, engine_error, timeout.
    `retryable` errors (engine faults, timeouts) are not stored in the ledger, so a rerun tries
    them again; an empty completion is stored as a failed attempt and the next attempt uses a
    derived seed; the others (a prompt longer than the context, a request the server refuses) are
    answers of their own and are reused from the ledger. `attempt` as in Completion.
    """

    reason: str
    message: str
    retryable: bool = False
    attempt: int = 0


@dataclass(frozen=True)
class TokenScore:
    """Log-probability of a completion given a prompt: the sum over its tokens and the count."""

    logprob: float
    tokens: int


class PromptTooLong(ValueError):
    """A prompt (or prompt + completion, when scoring) that does not fit the model's context."""


class EngineUnavailable(ConnectionError):
    """The engine cannot be reached right now (a Ray cluster that does not answer, every replica
    dead): a transient fault, so the step that met it may be retried; the message names the engine."""


@dataclass
class EngineInfo:
    """Identity of the model behind an engine; `model_id` goes into every ledger key."""

    backend: str
    model_id: str
    revision: str = ""
    context_length: int = 0
    extra: dict = field(default_factory=dict)


def derive_seed(*parts: object) -> int:
    """A 31-bit sampling seed derived from (problem id, round, sample index, …), stable everywhere."""
    return int(stable_hash("seed", *(str(p) for p in parts), length=8), 16) & 0x7FFFFFFF


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of attempt `attempt` of a request whose own seed is `seed`: the seed itself for
    attempt 0, a seed derived from (seed, attempt) for every retry."""
    return seed if attempt == 0 else derive_seed("retry", seed, attempt)


def with_attempt(request: Request, attempt: int) -> Request:
    """`request` as attempt `attempt` (same prompt and parameters, seed `retry_seed(seed, attempt)`)."""
    if attempt == 0:
        return request
    return replace(request, params=replace(request.params, seed=retry_seed(request.params.seed, attempt)))


def canonical_prompt(request: Request, rendered: str | None) -> str:
    """The prompt text that identifies a request: the rendered prompt when the engine renders
    chat messages itself, otherwise canonical JSON of the messages."""
    if rendered is not None:
        return rendered
    if request.prompt is not None:
        return request.prompt
    return json.dumps(request.message_dicts(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


Result = Completion | RequestError


class EngineStream(ABC):
    """An open stream of requests to one engine: `submit` at any time, `next_result` blocks until
    some submitted request is done and returns (its tag, its result). Results come in completion
    order; a failure of one request is a RequestError result, never an exception. `close` cancels
    what is still pending. Use as a context manager."""

    capacity: int = 1

    @abstractmethod
    def submit(self, tag: Hashable, request: Request) -> None:
        """Queue `request`; its result comes back from `next_result` with `tag`."""

    @abstractmethod
    def next_result(self) -> tuple[Hashable, Result]:
        """The next finished (tag, result); raises LookupError when nothing is pending."""

    @property
    @abstractmethod
    def pending(self) -> int:
        """Requests submitted whose result has not been returned yet."""

    def cancel(self, tag: Hashable) -> bool:
        """Withdraw the pending request `tag` if the engine can still drop it; True when it will
        not come back from `next_result` (default: False, it will)."""
        return False

    def close(self) -> None:  # noqa: B027 - a no-op default: sequential streams hold nothing
        """Cancel the requests still pending."""

    def __enter__(self) -> EngineStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SequentialStream(EngineStream):
    """A stream over an engine that runs one request at a time: `next_result` generates the oldest
    pending request through `engine.generate([request])`."""

    capacity = 1

    def __init__(self, engine: Engine):
        self.engine = engine
        self._queue: deque[tuple[Hashable, Request]] = deque()

    def submit(self, tag: Hashable, request: Request) -> None:
        """Queue `request` behind the ones already pending."""
        self._queue.append((tag, request))

    def next_result(self) -> tuple[Hashable, Result]:
        """Generate the oldest pending request and return (its tag, its result)."""
        if not self._queue:
            raise LookupError("no request is pending")
        tag, request = self._queue.popleft()
        for _, result in self.engine.generate([request]):
            return tag, result
        return tag, RequestError("engine_error", "engine returned no result", retryable=True)

    @property
    def pending(self) -> int:
        """Requests queued and not yet generated."""
        return len(self._queue)

    def cancel(self, tag: Hashable) -> bool:
        """Drop `tag` from the queue (always possible: nothing runs between calls)."""
        for position, (queued, _) in enumerate(self._queue):
            if queued == tag:
                del self._queue[position]
                return True
        return False

    def close(self) -> None:
        """Drop the requests not yet generated."""
        self._queue.clear()


def drain(stream: EngineStream, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
    """Submit every request to `stream` and yield (index into requests, result) as each is done;
    closing the generator early cancels the rest."""
    try:
        for index, request in enumerate(requests):
            stream.submit(index, request)
        while stream.pending:
            yield stream.next_result()  # type: ignore[misc]
    finally:
        stream.close()


def score_through_many(engine: Engine, prompt: str, completion: str) -> TokenScore:
    """`score` for engines whose scoring path is `score_many`: the one pair through
    `engine.score_many`; a RequestError in its place is raised as ValueError with its message."""
    (result,) = engine.score_many([(prompt, completion)])
    if isinstance(result, RequestError):
        raise ValueError(result.message)
    return result


class Engine(ABC):
    """One interface, several backends. Subclasses must be usable as context managers.
    `capacity`: requests the engine works on at once (its batch width or concurrency)."""

    info: EngineInfo
    capacity: int = 1

    @abstractmethod
    def render(self, request: Request) -> str | None:
        """The exact prompt string the model will see (chat template applied), or None when the
        backend sends chat messages to a server that applies its own template."""

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion | RequestError]]:
        """Run `requests`; yield (index into requests, result) as each one finishes, in any order.
        A failure of one request is yielded as a RequestError, never raised."""

    @abstractmethod
    def score(self, prompt: str, completion: str) -> TokenScore:
        """Log-probability of `completion` following the raw `prompt`."""

    def stream(self) -> EngineStream:
        """An open request stream to this engine (default: one request at a time through
        `generate`); engines that batch or run requests concurrently override it."""
        return SequentialStream(self)

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | RequestError]:
        """Log-probabilities of many (prompt, completion) pairs, in order. A pair that cannot be
        scored (longer than the context) is a RequestError("prompt_too_long") in its place, not an
        exception. Default: `score` pair by pair; engines override it to batch and reuse prefixes."""
        results: list[TokenScore | RequestError] = []
        for prompt, completion in pairs:
            try:
                results.append(self.score(prompt, completion))
            except PromptTooLong as exc:
                results.append(RequestError("prompt_too_long", str(exc)))
        return results

    def chat_template(self) -> str | None:
        """The model's chat template (Jinja source) when the engine knows it, else None (e.g. a
        server that applies its own)."""
        return None

    def close(self) -> None:  # noqa: B027 - a no-op default: engines without resources need not override it
        """Free the model or connections."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
