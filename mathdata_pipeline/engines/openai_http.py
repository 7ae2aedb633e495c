"""An engine for any OpenAI-compatible HTTP server: `vllm serve`, the llama.cpp servers, hosted APIs.

Requests run concurrently on one asyncio event loop in a background thread (at most
`max_concurrency` HTTP requests in flight, across every caller of the engine); `generate` yields
each result to the calling thread as soon as it arrives. Connection errors, timeouts, HTTP 429 and
5xx are retried with exponential backoff and full jitter; once the retries are spent the request
becomes a retryable RequestError, so a rerun of the pipeline tries it again.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import threading
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import httpx

from mathdata_pipeline.engines.base import (
    Completion,
    Engine,
    EngineInfo,
    Request,
    RequestError,
    TokenScore,
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


class OpenAIEngine(Engine):
    """Generation through an OpenAI-compatible `/completions` or `/chat/completions` endpoint.

    Keyword arguments:
      base_url: the API root including the version, e.g. "http://127.0.0.1:8000/v1".
      model: the model name sent with every request; it is also `info.model_id`, which goes into
        every ledger key.
      api_key_env: name of the environment variable holding the API key, read once here; when it
        is unset or empty no Authorization header is sent.
      api: "completions" (raw-prompt Requests, sent as `prompt`) or "chat" (messages Requests, sent
        as `messages`; the server applies its chat template). The other kind of Request is a
        configuration error and raises ValueError in `render` and `generate`.
      max_concurrency: most HTTP requests in flight at once (an asyncio.Semaphore).
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
        base_url: str,
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
        self.base_url = base_url.rstrip("/")
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
            extra={"base_url": self.base_url, "api": api},
        )
        api_key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine-loop", daemon=True)
        self._thread.start()
        self._semaphore = asyncio.Semaphore(max_concurrency)  # binds to the loop on first use
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
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
        results: queue.Queue[tuple[int, Result] | None] = queue.Queue()
        batch = self._submit(self._run_batch(requests, results))
        try:
            while (item := results.get()) is not None:
                yield item
            batch.result()  # re-raise an unexpected failure of the batch itself
        finally:
            batch.cancel()

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
        answer = self._submit(self._post("completions", payload)).result()
        if isinstance(answer, RequestError):
            raise RuntimeError(f"scoring request failed: {answer.reason}: {answer.message}")
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

    async def _run_batch(self, requests: Sequence[Request], results: queue.Queue) -> None:
        async def one(index: int, request: Request) -> None:
            results.put((index, await self._generate_one(request)))

        try:
            async with asyncio.TaskGroup() as group:
                for index, request in enumerate(requests):
                    group.create_task(one(index, request))
        finally:
            results.put(None)

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

    async def _post(self, endpoint: str, payload: dict) -> dict | RequestError:
        """POST with retries: the decoded JSON answer, or the RequestError of the last attempt."""
        url = f"{self.base_url}/{endpoint}"
        error = RequestError("engine_error", "not attempted", retryable=True)
        retry_after = 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
                await asyncio.sleep(max(random.uniform(0, ceiling), min(retry_after, self.backoff_max_s)))
                retry_after = 0.0
            try:
                async with self._semaphore:
                    async with asyncio.timeout(self.timeout_s):
                        response = await self._client.post(url, json=payload)
            except TimeoutError:
                error = RequestError("timeout", f"no answer from {url} within {self.timeout_s}s", retryable=True)
                continue
            except httpx.TransportError as exc:
                error = RequestError("engine_error", f"{exc!r} on {url}", retryable=True)
                continue
            status = response.status_code
            if status in _RETRY_STATUS or status >= 500:
                error = RequestError("engine_error", f"HTTP {status} from {url}: {response.text[:300]}", retryable=True)
                retry_after = _seconds(response.headers.get("retry-after"))
                continue
            if status >= 400:
                reason = "prompt_too_long" if _TOO_LONG.search(response.text) else "engine_error"
                return RequestError(
                    reason, f"HTTP {status} from {url}: {response.text[:500]}", retryable=status in _SETUP_STATUS
                )
            try:
                return response.json()
            except ValueError:
                error = RequestError("engine_error", f"invalid JSON from {url}: {response.text[:300]}", retryable=True)
        return RequestError(error.reason, f"after {self.max_retries + 1} attempts: {error.message}", retryable=True)


def _seconds(header: str | None) -> float:
    """A Retry-After header given in seconds (an HTTP date or garbage counts as 0)."""
    try:
        return max(float(header or 0), 0.0)
    except ValueError:
        return 0.0
