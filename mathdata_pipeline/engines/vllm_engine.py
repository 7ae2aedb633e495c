"""In-process vLLM for GPU machines; install the `gpu` extra.

Generation streams through vLLM's own engine loop (`LLMEngine.add_request` / `step`): requests
are added as they are submitted, vLLM's scheduler keeps its batch full by continuous batching, and
each result is handed back (and committed to the ledger by the runner) the moment its sequence
finishes; no fixed chunks wait for their longest sample. Scoring sends every pair in one call
with prompt log-probabilities; prefix caching (on by default) evaluates a shared demonstration
once. `close()` shuts the engine down and frees its GPU memory before anything else starts.
A local model path is identified by a content fingerprint, so a retrained model saved at the same
path never gets the old model's cached results.
"""

from __future__ import annotations

import gc
import itertools
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path

from mathdata_pipeline.engines.base import (
    Completion,
    Engine,
    EngineInfo,
    EngineStream,
    Request,
    RequestError,
    Result,
    TokenScore,
    drain,
    score_through_many,
)
from mathdata_pipeline.engines.fingerprint import model_fingerprint


class VLLMEngine(Engine):
    """vLLM engine. Parameters mirror `vllm.LLM`: model (hub id or local path, a GGUF file too),
    tokenizer (needed for GGUF), revision, tensor_parallel_size, gpu_memory_utilization,
    max_model_len, enable_prefix_caching, dtype, max_num_seqs (the batch width, also this
    engine's `capacity`)."""

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        revision: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int = 4096,
        enable_prefix_caching: bool = True,
        dtype: str = "auto",
        max_num_seqs: int = 256,
    ):
        import vllm

        self._vllm = vllm
        self._llm = vllm.LLM(
            model=model,
            tokenizer=tokenizer,
            revision=revision,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            dtype=dtype,
            max_num_seqs=max_num_seqs,
        )
        self._tokenizer = self._llm.get_tokenizer()
        self.max_model_len = max_model_len
        self.capacity = max_num_seqs
        local = Path(model).exists()
        self.info = EngineInfo(
            backend="vllm",
            model_id=model,
            revision=model_fingerprint(model) if local else (revision or ""),
            context_length=max_model_len,
        )

    def chat_template(self) -> str | None:
        """The tokenizer's chat template."""
        return getattr(self._tokenizer, "chat_template", None)

    def render(self, request: Request) -> str:
        """The raw prompt, or the messages through the tokenizer's chat template."""
        if request.prompt is not None:
            return request.prompt
        return self._tokenizer.apply_chat_template(request.message_dicts(), tokenize=False, add_generation_prompt=True)

    def sampling(self, request: Request, room: int):
        """vLLM sampling parameters of one request: its own seed, at most `room` new tokens, only
        the final output returned."""
        p = request.params
        kind = getattr(getattr(self._vllm, "sampling_params", None), "RequestOutputKind", None)
        extra = {"output_kind": kind.FINAL_ONLY} if kind is not None else {}
        return self._vllm.SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            max_tokens=min(p.max_tokens, room),
            stop=list(p.stop) or None,
            **extra,
        )

    def prompt_ids(self, request: Request) -> list[int]:
        """Token ids of the rendered prompt."""
        return self._tokenizer.encode(self.render(request), add_special_tokens=False)

    def stream(self) -> EngineStream:
        """An open stream into vLLM's engine loop (continuous batching)."""
        return _VLLMStream(self)

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """All `requests` into the engine loop at once; each result as its sequence finishes.
        Prompts longer than the context become RequestError("prompt_too_long")."""
        yield from drain(self.stream(), requests)

    def score(self, prompt: str, completion: str) -> TokenScore:
        """Sum of log-probabilities of `completion` after `prompt` via vLLM's prompt_logprobs."""
        return score_through_many(self, prompt, completion)

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | RequestError]:
        """Scores of many pairs in one `generate` call with prompt log-probabilities (prefix
        caching evaluates a shared prefix once). A pair longer than the context is a
        RequestError("prompt_too_long") in its place."""
        results: list[TokenScore | RequestError | None] = [None] * len(pairs)
        batch, lengths, positions = [], [], []
        for index, (prompt, completion) in enumerate(pairs):
            p_ids = self._tokenizer.encode(prompt, add_special_tokens=False)
            c_ids = self._tokenizer.encode(completion, add_special_tokens=False)
            if not p_ids or not c_ids:
                results[index] = RequestError("engine_error", "score needs a non-empty prompt and completion")
            elif len(p_ids) + len(c_ids) >= self.max_model_len:  # one more token is generated
                results[index] = RequestError(
                    "prompt_too_long", f"{len(p_ids) + len(c_ids)} tokens, context is {self.max_model_len}"
                )
            else:
                batch.append({"prompt_token_ids": p_ids + c_ids})
                lengths.append((len(p_ids), c_ids))
                positions.append(index)
        if batch:
            params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
            outputs = self._llm.generate(batch, params, use_tqdm=False)
            for index, (start, c_ids), output in zip(positions, lengths, outputs):
                entries = output.prompt_logprobs[start:]
                total = sum(entry[token].logprob for entry, token in zip(entries, c_ids))
                results[index] = TokenScore(logprob=float(total), tokens=len(c_ids))
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Shut the engine down (its engine-core process too) and free its GPU memory, so the next
        engine or a training step in this process finds the memory free (idempotent)."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        engine = getattr(llm, "llm_engine", None)
        for owner in (llm, engine, getattr(engine, "engine_core", None)):
            shutdown = getattr(owner, "shutdown", None)
            if callable(shutdown):
                shutdown()
                break
        del llm, engine
        release_gpu_memory()


def release_gpu_memory() -> None:
    """Tear down vLLM's distributed state and return cached CUDA memory to the device."""
    gc.collect()
    try:
        from vllm.distributed import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except ImportError:  # older vLLM: the same steps by hand
        from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _VLLMStream(EngineStream):
    """Requests go into vLLM's engine loop as they are submitted; `next_result` steps the loop
    until some sequence finishes."""

    def __init__(self, engine: VLLMEngine):
        self.engine = engine
        self.capacity = engine.capacity
        self._core = engine._llm.llm_engine
        self._ready: deque[tuple[Hashable, Result]] = deque()
        self._running: dict[str, Hashable] = {}
        self._ids = itertools.count()

    def submit(self, tag: Hashable, request: Request) -> None:
        """Add `request` to the engine loop (a prompt longer than the context is answered at once)."""
        ids = self.engine.prompt_ids(request)
        room = self.engine.max_model_len - len(ids)
        if room < 1:
            message = f"{len(ids)} prompt tokens, context is {self.engine.max_model_len}"
            self._ready.append((tag, RequestError("prompt_too_long", message)))
            return
        request_id = f"mathdata-{next(self._ids)}"
        try:
            self._core.add_request(request_id, {"prompt_token_ids": ids}, self.engine.sampling(request, room))
        except Exception as exc:  # noqa: BLE001 - a request vLLM refuses is that request's error
            self._ready.append((tag, RequestError("engine_error", f"{type(exc).__name__}: {exc}", retryable=True)))
            return
        self._running[request_id] = tag

    def next_result(self) -> tuple[Hashable, Result]:
        """Step the engine until a sequence finishes; return (its tag, its Completion)."""
        while not self._ready:
            if not self._running:
                raise LookupError("no request is pending")
            try:
                outputs = self._core.step()
            except Exception as exc:  # noqa: BLE001 - a failed step fails what was running, retryably
                message = f"{type(exc).__name__}: {exc}"
                for tag in self._running.values():
                    self._ready.append((tag, RequestError("engine_error", message, retryable=True)))
                self.close()
                break
            for output in outputs:
                if output.finished and output.request_id in self._running:
                    out = output.outputs[0]
                    completion = Completion(
                        out.text, out.finish_reason or "stop", len(output.prompt_token_ids), len(out.token_ids)
                    )
                    self._ready.append((self._running.pop(output.request_id), completion))
        return self._ready.popleft()

    @property
    def pending(self) -> int:
        """Requests submitted whose result has not been returned yet."""
        return len(self._ready) + len(self._running)

    def cancel(self, tag: Hashable) -> bool:
        """Abort the sequence of request `tag` if it is still running."""
        for request_id, running in self._running.items():
            if running == tag:
                self._core.abort_request([request_id])
                del self._running[request_id]
                return True
        return False

    def close(self) -> None:
        """Abort the sequences still running."""
        if self._running:
            try:
                self._core.abort_request(list(self._running))
            except Exception:  # noqa: BLE001 - an engine that failed has nothing left to abort
                pass
            self._running.clear()
