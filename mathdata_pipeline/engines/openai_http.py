"""An engine for any OpenAI-compatible HTTP server: `vllm serve`, the llama.cpp servers, hosted APIs.

Requests run concurrently on one asyncio event loop in a background thread; `stream()` and
`generate` hand each result to the calling thread as soon as it arrives. The engine can front
several replicas of one model (one `vllm serve` per GPU or node): each request goes to the
least-loaded live endpoint, at most `max_concurrency` requests in flight per endpoint. An endpoint
that refuses or drops connections is taken out of rotation for a cool-down (doubling up to
`backoff_max_s` while it keeps failing) and its requests fail over to the others at once, so a
replica that dies mid-run costs only the requests it was working on, which run again elsewhere.
Timeouts, HTTP 429 and 5xx are retried with exponential backoff and full jitter; once the retries
are spent the request becomes a retryable RequestError, so a rerun of the pipeline tries it again.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import threading
import time
from collections.abc import Coroutine, Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import httpx

from mathdata_pipeline.engines.base import (
    Completion,
    Engine,
    EngineInfo,
    EngineStream,
    Request,
    RequestError,
    TokenScore,
    drain,
)

# How servers say that prompt (+ max_tokens) does not fit: OpenAI and llama-cpp-python
# ("maximum context length", code context_length_exceeded), vLLM ("maximum model length",
# "longer than the maximum model length"), llama.cpp's llama-server ("exceeds the available
# context size"), and generic wordings.
_TOO_LONG = re.compile(
    r"context[ _]length|context (window|size)|maximum model length|prompt is too long"
    r"|too many tokens",
    re.IGNORECASE,
)

# Statuses retried like connection errors (as the official OpenAI client does), besides every 5xx.
_RETRY_STATUS = {408, 409, 429}
# Statuses that mean a wrong key, URL or model name: not retried now, but not an answer of the
# request either, so retryable=True keeps them out of the ledger and a fixed rerun tries again.
_SETUP_STATUS = {401, 403, 404}

Result = Completion | RequestError
_COOLDOWN_BASE_S = 1.0  # first time out of rotation for an endpoint that dropped a connection


@dataclass
class _Endpoint:
    """One replica: its API root, requests in flight, and until when it is out of rotation."""

    url: str
    in_flight: int = 0
    down_until: float = 0.0
    failures: int = 0
    served: int = 0


class OpenAIEngine(Engine):
    """Generation through an OpenAI-compatible `/completions` or `/chat/completions` endpoint.

    Keyword arguments:
      base_url: the API root including the version, e.g. "http://127.0.0.1:8000/v1", or a list of
        them: replicas of the same model, used with least-loaded dispatch and failover.
      model: the model name sent with every request; it is also `info.model_id`, which goes into
        every ledger key.
      api_key_env: name of the environment variable holding the API key, read once here; when it
        is unset or empty no Authorization header is sent.
      api: "completions" (raw-prompt Requests, sent as `prompt`) or "chat" (messages Requests, sent
        as `messages`; the server applies its chat template). The other kind of Request is a
        configuration error and raises ValueError in `render` and `generate`.
      max_concurrency: most HTTP requests in flight at once per endpoint.
      timeout_s: limit on one HTTP attempt, from sending to the whole answer.
      max_retries: further attempts after a connection error, timeout, HTTP 408, 409, 429 or 5xx.
      backoff_base_s, backoff_max_s: the wait before retry k is uniform in
        [0, min(backoff_max_s, backoff_base_s * 2**(k-1))] ("full jitter"); a numeric Retry-After
        header of a retried answer is honoured up to backoff_max_s.
      context_length: the model's context size in tokens, for `info` only (0 = unknown).
      revision: model revision, for `info` and so for ledger keys.
    """

    def __init__(
        self,
        *,
        base_url: str | Sequence[str],
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        api: str = "completions",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        context_length: int = 0,
        revision: str = "",
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {api!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("base_url needs at least one endpoint")
        self._endpoints = [_Endpoint(url.rstrip("/")) for url in urls]
        self.base_url = self._endpoints[0].url
        self.max_concurrency = max_concurrency
        self.capacity = max_concurrency * len(self._endpoints)
        self.model = model
        self.api = api
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.info = EngineInfo(
            backend="openai",
            model_id=model,
            revision=revision,
            context_length=context_length,
            extra={"base_url": [e.url for e in self._endpoints], "api": api},
        )
        api_key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine-loop", daemon=True)
        self._thread.start()
        self._wakeup = asyncio.Event()  # set when a slot frees or an endpoint changes state; binds to the loop on use
        connections = self.capacity
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(headers=headers, limits=limits, timeout=None)

    def render(self, request: Request) -> str | None:
        """The raw prompt of a raw-prompt request; None for a chat request (the server renders it).

        Raises ValueError when the request's kind does not match `api`.
        """
        self._check(request)
        return request.prompt

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Send `requests` concurrently; yield (index into requests, Completion | RequestError) as
        each finishes, in completion order.

        Every request carries its seed, temperature, top_p, max_tokens and stop. Other 4xx answers
        than 408/409/429 are not retried: one about the context length becomes
        RequestError("prompt_too_long"); 401, 403 and 404 (wrong key, URL or model)
        RequestError("engine_error", retryable=True), so they stay out of the ledger; the rest
        RequestError("engine_error", retryable=False). Failures that outlast the retries become
        RequestError("timeout" or "engine_error", retryable=True). Raises ValueError (before sending
        anything) when a request's kind does not match `api`. Closing the generator early cancels
        the requests still pending.
        """
        for request in requests:
            self._check(request)
        yield from drain(self.stream(), requests)

    def stream(self) -> EngineStream:
        """An open stream: every submitted request starts at once (waiting only for a free slot
        on some endpoint); results come back in completion order."""
        return _OpenAIStream(self)

    def endpoint_load(self) -> dict[str, int]:
        """Requests each endpoint has answered so far ({url: count})."""
        return {e.url: e.served for e in self._endpoints}

    def score(self, prompt: str, completion: str) -> TokenScore:
        """Log-probability of `completion` following the raw `prompt`: the sum over the tokens
        that overlap `completion`, and their count.

        One request to the completions endpoint (whatever `api` is) with `echo=True, logprobs=1, max_tokens=1,
        temperature=0` (max_tokens is 1, not 0, because llama-cpp-python reads 0 as "no limit"):
        the server returns the log-probability of every token of prompt + completion followed by
        the one generated token. The tokens are laid end to end backwards from the end of
        prompt + completion, and each one's text is checked against it, so a server whose numbers
        do not line up with the text is refused instead of giving a wrong score.

        Servers: vLLM and the legacy OpenAI completions models follow this convention.
        llama-cpp-python's server (`python -m llama_cpp.server`, 0.3.x) gives correct values only
        when the prompt starts with the model's BOS token text (for SmolLM2 "<|im_start|>", which
        every chat-template-rendered prompt does); for other prompts of a model that adds no BOS
        token (SmolLM2 does not) its echoed log-probabilities are shifted by one token, and this
        raises NotImplementedError. Also NotImplementedError: servers that do not echo prompt
        log-probabilities (llama.cpp's own `llama-server`, chat-only hosted APIs).
        Limitations: prompt and completion are tokenized together, so a token spanning their
        boundary counts as a completion token; `prompt` must be non-empty (the first token has no
        log-probability). Raises ValueError when the server's token strings do not spell out the
        completion (e.g. a character split across tokens), RuntimeError when the request fails
        (also when the server has no /completions endpoint).
        """
        result = self._submit(self._score_one(prompt, completion)).result()
        if isinstance(result, RequestError):
            raise RuntimeError(f"scoring request failed: {result.reason}: {result.message}")
        return result

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | RequestError]:
        """Scores of many pairs, in order, sent concurrently (as `score`, up to `max_concurrency`
        per endpoint; a server with prefix caching, such as vLLM's, reuses shared prompt
        prefixes). A pair longer than the model's context is a RequestError("prompt_too_long")
        in its place; other failures raise as in `score`."""

        async def everything():
            return await asyncio.gather(*(self._score_one(p, c) for p, c in pairs))

        results = self._submit(everything()).result()
        for result in results:
            if isinstance(result, RequestError) and result.reason != "prompt_too_long":
                raise RuntimeError(f"scoring request failed: {result.reason}: {result.message}")
        return results

    async def _score_one(self, prompt: str, completion: str) -> TokenScore | RequestError:
        """One scoring request (see `score`): a TokenScore, or the RequestError of the request."""
        if not prompt:
            raise ValueError("score needs a non-empty prompt: the first token has no log-probability")
        body = prompt + completion
        payload = {
            "model": self.model,
            "prompt": body,
            "echo": True,
            "logprobs": 1,
            "max_tokens": 1,
            "temperature": 0.0,
            "seed": 0,
        }
        answer = await self._post("completions", payload)
        if isinstance(answer, RequestError):
            return answer
        choice = answer["choices"][0]
        logprobs = choice.get("logprobs") or {}
        tokens, values, text = logprobs.get("tokens"), logprobs.get("token_logprobs"), choice.get("text") or ""
        if not tokens or values is None or not text.startswith(body):
            raise NotImplementedError(
                f"{self.base_url} does not echo prompt log-probabilities on /completions "
                "(echo=True, logprobs=1); scoring needs vLLM, a legacy OpenAI completions "
                "model or llama-cpp-python's server"
            )
        generated = text[len(body) :]
        if generated and tokens[-1] != generated:
            raise NotImplementedError(
                f"{self.base_url} returned log-probabilities that stop before the generated token {generated!r}: "
                "they are shifted by one token (llama-cpp-python's server does this for models that add no BOS "
                "token). Start the prompt with the model's BOS token text (a chat-template-rendered prompt does) "
                "or score on vLLM"
            )
        picked, end = [], len(body)
        for token, value in zip(reversed(tokens[:-1]), reversed(values[:-1])):
            if end <= len(prompt):
                break
            if body[end - len(token) : end] != token or value is None:
                raise ValueError(
                    f"the server's tokens do not spell out the completion (token {token!r} "
                    f"against {body[max(end - len(token), 0) : end]!r}); cannot score it"
                )
            picked.append(value)
            end -= len(token)
        if end > len(prompt):
            raise ValueError("the server returned fewer tokens than the completion needs; cannot score it")
        return TokenScore(logprob=float(sum(picked)), tokens=len(picked))

    def close(self) -> None:
        """Close the HTTP connections and stop the event-loop thread (idempotent)."""
        if self._loop.is_closed():
            return
        self._submit(self._client.aclose()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _check(self, request: Request) -> None:
        if self.api == "chat" and request.messages is None:
            raise ValueError(
                "a raw-prompt Request cannot go to a chat API: use api='completions' "
                "or send Request.chat(messages, params)"
            )
        if self.api == "completions" and request.prompt is None:
            raise ValueError(
                "a chat Request cannot go to the completions API (this engine has no local "
                "chat template): use api='chat' or render the messages to a prompt first"
            )

    def _submit(self, coroutine: Coroutine[Any, Any, Any]) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _generate_one(self, request: Request) -> Result:
        params = request.params
        payload: dict[str, Any] = {
            "model": self.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stop": list(params.stop),
            "seed": params.seed,
        }
        if self.api == "chat":
            payload["messages"] = request.message_dicts()
        else:
            payload["prompt"] = request.prompt
        answer = await self._post("chat/completions" if self.api == "chat" else "completions", payload)
        if isinstance(answer, RequestError):
            return answer
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
            usage = answer.get("usage") or {}
            return Completion(
                text=text or "",
                finish_reason=choice.get("finish_reason") or "unknown",
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return RequestError("engine_error", f"malformed answer ({exc!r}): {str(answer)[:300]}", retryable=True)

    async def _acquire(self) -> _Endpoint:
        """The live endpoint with the fewest requests in flight, once one has a free slot; while
        every endpoint is out of rotation, wait for the first to come back."""
        while True:  # everything here runs on the engine's one event-loop thread: no lock needed
            now = time.monotonic()
            live = [e for e in self._endpoints if e.down_until <= now]
            free = [e for e in live if e.in_flight < self.max_concurrency]
            if free:
                chosen = min(free, key=lambda e: e.in_flight)
                chosen.in_flight += 1
                return chosen
            wait = None if live else min(e.down_until for e in self._endpoints) - now
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _release(self, endpoint: _Endpoint, *, dropped: bool) -> None:
        """Give back `endpoint`'s slot; `dropped` (a refused or broken connection) takes it out of
        rotation for a cool-down that doubles while it keeps failing."""
        endpoint.in_flight -= 1
        if dropped:
            endpoint.failures += 1
            cooldown = min(self.backoff_max_s, _COOLDOWN_BASE_S * 2 ** (endpoint.failures - 1))
            endpoint.down_until = time.monotonic() + cooldown
        else:
            endpoint.failures, endpoint.down_until = 0, 0.0
            endpoint.served += 1
        self._wakeup.set()

    def _others_live(self, endpoint: _Endpoint) -> bool:
        now = time.monotonic()
        return any(e is not endpoint and e.down_until <= now for e in self._endpoints)

    async def _post(self, path: str, payload: dict) -> dict | RequestError:
        """POST with failover and retries: the decoded JSON answer, or the RequestError of the last
        attempt. A dropped connection moves the request to another live endpoint at once (at
        most once per endpoint); other failures wait a backoff and count against `max_retries`."""
        error = RequestError("engine_error", "not attempted", retryable=True)
        retry_after, failures, failovers = 0.0, 0, 0
        while True:
            endpoint = await self._acquire()
            url, dropped = f"{endpoint.url}/{path}", False
            try:
                async with asyncio.timeout(self.timeout_s):
                    response = await self._client.post(url, json=payload)
            except TimeoutError:
                error = RequestError("timeout", f"no answer from {url} within {self.timeout_s}s", retryable=True)
                response = None
            except httpx.TransportError as exc:
                error, dropped, response = RequestError("engine_error", f"{exc!r} on {url}", retryable=True), True, None
            finally:
                self._release(endpoint, dropped=dropped)
            if response is not None:
                status = response.status_code
                if status < 400:
                    try:
                        return response.json()
                    except ValueError:
                        error = RequestError(
                            "engine_error", f"invalid JSON from {url}: {response.text[:300]}", retryable=True
                        )
                elif status in _RETRY_STATUS or status >= 500:
                    message = f"HTTP {status} from {url}: {response.text[:300]}"
                    error = RequestError("engine_error", message, retryable=True)
                    retry_after = _seconds(response.headers.get("retry-after"))
                else:
                    reason = "prompt_too_long" if _TOO_LONG.search(response.text) else "engine_error"
                    return RequestError(
                        reason, f"HTTP {status} from {url}: {response.text[:500]}", retryable=status in _SETUP_STATUS
                    )
            if dropped and failovers < len(self._endpoints) - 1 and self._others_live(endpoint):
                failovers += 1
                continue
            failures += 1
            if failures > self.max_retries:
                return RequestError(error.reason, f"after {failures} attempts: {error.message}", retryable=True)
            ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
            await asyncio.sleep(max(random.uniform(0, ceiling), min(retry_after, self.backoff_max_s)))
            retry_after = 0.0


class _OpenAIStream(EngineStream):
    """The OpenAIEngine's open stream: each submitted request is a task on the engine's event
    loop; finished ones wait in a thread-safe queue for `next_result`."""

    def __init__(self, engine: OpenAIEngine):
        self.engine = engine
        self.capacity = engine.capacity
        self._done: queue.Queue[tuple[Hashable, Result]] = queue.Queue()
        self._tasks: dict[Hashable, Future] = {}
        self._pending = 0

    def submit(self, tag: Hashable, request: Request) -> None:
        """Start `request` (ValueError when its kind does not match the engine's `api`)."""
        self.engine._check(request)

        async def one() -> None:
            try:
                result = await self.engine._generate_one(request)
            except Exception as exc:  # noqa: BLE001 - never lose a request to an unexpected failure
                result = RequestError("engine_error", f"{type(exc).__name__}: {exc}", retryable=True)
            if tag in self._tasks:  # not cancelled meanwhile
                self._done.put((tag, result))

        self._pending += 1
        self._tasks[tag] = self.engine._submit(one())

    def next_result(self) -> tuple[Hashable, Result]:
        """The next finished (tag, result), waiting for it."""
        if not self._pending:
            raise LookupError("no request is pending")
        tag, result = self._done.get()
        self._pending -= 1
        self._tasks.pop(tag, None)
        return tag, result

    @property
    def pending(self) -> int:
        """Requests submitted whose result has not been returned yet."""
        return self._pending

    def cancel(self, tag: Hashable) -> bool:
        """Cancel the request `tag` unless its answer is already on its way back."""
        task = self._tasks.get(tag)
        if task is None or not task.cancel():
            return False
        del self._tasks[tag]
        self._pending -= 1
        return True

    def close(self) -> None:
        """Cancel the requests still running."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._pending = 0


def _seconds(header: str | None) -> float:
    """A Retry-After header given in seconds (an HTTP date or garbage counts as 0)."""
    try:
        return max(float(header or 0), 0.0)
    except ValueError:
        return 0.0
