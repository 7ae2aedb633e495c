"""In-process vLLM (`vllm.LLM`) for GPU machines; install the `gpu` extra.

Requests go to vLLM in chunks (one `generate` call per chunk, each request with its own seed);
results of a chunk are yielded as soon as that chunk is done, so the ledger commits them before
the next chunk starts. Prefix caching is on by default (rejection sampling and ScaleQuest send
many samples of the same prompt).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mathdata_pipeline.engines.base import Completion, Engine, EngineInfo, Request, RequestError, TokenScore


class VLLMEngine(Engine):
    """vLLM engine. Parameters mirror `vllm.LLM`: model (hub id or local path, a GGUF file too),
    tokenizer (needed for GGUF), revision, tensor_parallel_size, gpu_memory_utilization,
    max_model_len, enable_prefix_caching, dtype; `chunk_size` requests per generate call."""

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
        chunk_size: int = 1024,
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
        )
        self._tokenizer = self._llm.get_tokenizer()
        self.max_model_len = max_model_len
        self.chunk_size = chunk_size
        self.info = EngineInfo(backend="vllm", model_id=model, revision=revision or "", context_length=max_model_len)

    def chat_template(self) -> str | None:
        """The tokenizer's chat template."""
        return getattr(self._tokenizer, "chat_template", None)

    def render(self, request: Request) -> str:
        """The raw prompt, or the messages through the tokenizer's chat template."""
        if request.prompt is not None:
            return request.prompt
        return self._tokenizer.apply_chat_template(request.message_dicts(), tokenize=False, add_generation_prompt=True)

    def _sampling(self, request: Request, room: int):
        p = request.params
        return self._vllm.SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            max_tokens=min(p.max_tokens, room),
            stop=list(p.stop) or None,
        )

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion | RequestError]]:
        """Generate in chunks of `chunk_size`; prompts longer than the context become errors."""
        for start in range(0, len(requests), self.chunk_size):
            chunk = list(enumerate(requests[start : start + self.chunk_size], start=start))
            prompts, params, indices = [], [], []
            for index, request in chunk:
                ids = self._tokenizer.encode(self.render(request), add_special_tokens=False)
                room = self.max_model_len - len(ids)
                if room < 1:
                    yield (
                        index,
                        RequestError("prompt_too_long", f"{len(ids)} prompt tokens, context is {self.max_model_len}"),
                    )
                    continue
                prompts.append({"prompt_token_ids": ids})
                params.append(self._sampling(request, room))
                indices.append(index)
            if not prompts:
                continue
            try:
                outputs = self._llm.generate(prompts, params, use_tqdm=False)
            except Exception as exc:  # a failed batch: every request in it is retryable
                for index in indices:
                    yield index, RequestError("engine_error", f"{type(exc).__name__}: {exc}", retryable=True)
                continue
            for index, output in zip(indices, outputs):
                out = output.outputs[0]
                yield (
                    index,
                    Completion(out.text, out.finish_reason or "stop", len(output.prompt_token_ids), len(out.token_ids)),
                )

    def score(self, prompt: str, completion: str) -> TokenScore:
        """Sum of log-probabilities of `completion` after `prompt` via vLLM's prompt_logprobs."""
        p_ids = self._tokenizer.encode(prompt, add_special_tokens=False)
        c_ids = self._tokenizer.encode(completion, add_special_tokens=False)
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        (output,) = self._llm.generate([{"prompt_token_ids": p_ids + c_ids}], params, use_tqdm=False)
        entries = output.prompt_logprobs[len(p_ids) :]
        total = sum(entry[token].logprob for entry, token in zip(entries, c_ids))
        return TokenScore(logprob=float(total), tokens=len(c_ids))

    def close(self) -> None:
        """Drop the engine (vLLM frees GPU memory when the object is collected)."""
        self._llm = None
