"""The engine interface every backend implements, and the value types that cross it.

A `Request` is one sample: a prompt (raw text, or chat messages the engine renders with its
template), sampling parameters and an explicit seed. n samples of one prompt are n requests with
n seeds (see `derive_seed`); no backend relies on its own default seed.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

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
        """A JSON-ready dict (stop as a list)."""
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


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


@dataclass(frozen=True)
class RequestError:
    """A request that produced no usable completion.

    `reason` is one of: prompt_too_long, empty_completion, engine_error, timeout.
    `retryable` errors (engine faults, timeouts) are tried again on a rerun; the others are
    answers of their own and are reused from the ledger.
    """

    reason: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class TokenScore:
    """Log-probability of a completion given a prompt: the sum over its tokens and the count."""

    logprob: float
    tokens: int


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


def canonical_prompt(request: Request, rendered: str | None) -> str:
    """The prompt text that identifies a request: the rendered prompt when the engine renders
    chat messages itself, otherwise canonical JSON of the messages."""
    if rendered is not None:
        return rendered
    if request.prompt is not None:
        return request.prompt
    return json.dumps(request.message_dicts(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class Engine(ABC):
    """One interface, several backends. Subclasses must be usable as context managers."""

    info: EngineInfo

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
