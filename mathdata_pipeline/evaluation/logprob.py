"""The log-probability of reference solutions under a model, batched with transformers.

A low-noise measure that still separates two models when neither answers much right: for each
benchmark item, the sum and count of the log-probabilities of its reference solution's tokens after
the prompt (mean per token = sum / count).

`BatchScorer` sorts the pairs by length and scores them in batches bounded by a token budget. Each
batch is left-padded with explicit position ids (so a padded sequence scores as it would alone),
and the language-model head runs only on the last positions, the ones that predict completion
tokens. Scores go through the request ledger (`score_many`), keyed by the scorer's identity and the
texts, so a rerun or a second mixture that shares the base model recomputes nothing.

All scores of one comparison come from this one runtime: transformers and llama.cpp do not give the
same numbers for the same text (ENVIRONMENT.md), so the engines' own `score` is not mixed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.engines.base import EngineInfo, TokenScore
from mathdata_pipeline.engines.ledger import RequestLedger, score_key
from mathdata_pipeline.engines.runner import GenerationStats, Progress

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def weights_revision(folder: str | Path) -> str:
    """A revision of a transformers folder from its files' names, sizes and modification times (a
    rewritten model gets a new one; nothing is read, so it is instant for large models)."""
    folder = Path(folder)
    parts = [
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(folder.iterdir())
        if p.suffix in WEIGHT_SUFFIXES
    ]
    return stable_hash("weights", *parts, length=12)


def scorer_info(source: str | Path, model_id: str, max_tokens: int) -> EngineInfo:
    """The identity of a BatchScorer of `source` in ledger keys (computed without loading it)."""
    revision = weights_revision(source) if Path(source).is_dir() else str(source)
    return EngineInfo(backend="transformers", model_id=model_id, revision=revision, context_length=max_tokens)


class BatchScorer:
    """Batched log-probabilities with a transformers causal LM.

    Parameters: `source` (a transformers folder, or anything `hf_models.load_causal_lm` loads);
    `model_id` (the name in ledger keys); `max_tokens`, the longest prompt + completion scored
    (longer pairs get no score); `batch_tokens`, padded tokens per forward pass. Runs on CUDA when
    available (float32 everywhere, so small differences between models are not rounding).
    """

    def __init__(self, source: str | Path, *, model_id: str, max_tokens: int = 4096, batch_tokens: int = 8192):
        import torch

        from mathdata_pipeline.common.hf_models import load_causal_lm

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer = load_causal_lm(str(source))
        self.model.to(self.device)
        self.max_tokens, self.batch_tokens = max_tokens, batch_tokens
        self.info = scorer_info(source, model_id, max_tokens)

    def chat_prompt(self, question: str) -> str:
        """`question` as the user turn in the model's chat template, with the assistant opening."""
        messages = [{"role": "user", "content": question}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """Token ids of prompt and completion, each tokenized as it is (no BOS added)."""
        tokenize = self.tokenizer
        return (
            tokenize(prompt, add_special_tokens=False)["input_ids"],
            tokenize(completion, add_special_tokens=False)["input_ids"],
        )

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | None]:
        """TokenScores of (prompt, completion) pairs, aligned with `pairs`; None for a pair longer
        than `max_tokens`. Raises ValueError for an empty prompt or completion."""
        encoded = [self.encode(p, c) for p, c in pairs]
        for i, (prompt, completion) in enumerate(encoded):
            if not prompt or not completion:
                raise ValueError(f"pair {i}: empty prompt or completion")
        scores: list[TokenScore | None] = [None] * len(pairs)
        fits = sorted(
            (i for i, (p, c) in enumerate(encoded) if len(p) + len(c) <= self.max_tokens),
            key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])),
        )
        for batch in self._batches(fits, encoded):
            for i, score in zip(batch, self._score_batch([encoded[i] for i in batch])):
                scores[i] = score
        return scores

    def _batches(self, order: list[int], encoded) -> list[list[int]]:
        """Consecutive groups of `order` (longest first) whose padded size fits `batch_tokens`."""
        batches, current, longest = [], [], 0
        for i in order:
            length = len(encoded[i][0]) + len(encoded[i][1])
            if current and max(longest, length) * (len(current) + 1) > self.batch_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, length)
        return batches + ([current] if current else [])

    def _score_batch(self, batch: list[tuple[list[int], list[int]]]) -> list[TokenScore]:
        import torch

        width = max(len(p) + len(c) for p, c in batch)
        keep = max(len(c) for _, c in batch) + 1
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (prompt, completion) in enumerate(batch):
            sequence = prompt + completion
            ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                logits_to_keep=keep,
            ).logits
        scores = []
        for row, (_, completion) in enumerate(batch):
            n = len(completion)
            predicting = logits[row, keep - n - 1 : keep - 1].float()
            target = torch.tensor(completion, device=predicting.device)
            logprobs = torch.log_softmax(predicting, dim=-1).gather(-1, target[:, None])
            scores.append(TokenScore(logprob=float(logprobs.sum()), tokens=n))
        return scores

    def close(self) -> None:
        """Free the model (and the GPU memory it held)."""
        import torch

        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()


def score_many(
    scorer: BatchScorer,
    ledger: RequestLedger,
    pairs: Sequence[tuple[str, str]],
    *,
    chunk: int = 256,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
) -> tuple[list[TokenScore | None], GenerationStats]:
    """`scorer.score` over `pairs` through `ledger`: stored scores are reused, the rest are scored
    `chunk` pairs at a time and committed after each chunk (a crash loses one chunk at most).
    Pairs too long to score are not stored (None). Output: (scores aligned with `pairs`,
    statistics: requests, cache_hits, prompt_tokens = scored completion tokens, wall_seconds).
    A scorer with workers (`ray_scoring.RayScorer`) gets chunks of at most `chunk` pairs (fewer when
    that gives each worker about four chunks); each chunk is committed as it comes back."""
    started = time.monotonic()
    stats = GenerationStats(requests=len(pairs))
    keys = [score_key(scorer.info, prompt, completion) for prompt, completion in pairs]
    found: dict[str, TokenScore | None] = dict(ledger.lookup_scores(keys))
    stats.cache_hits = sum(key in found for key in keys)
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in found:
            first.setdefault(key, i)  # each distinct pair is scored once
    todo = list(first.values())
    progress = Progress(len(pairs), log, progress_interval, label="scored")
    progress.advance(stats.cache_hits)
    for part, part_scores in _chunk_scores(scorer, pairs, todo, chunk):
        for i, score in zip(part, part_scores):
            found[keys[i]] = score
            if score is not None:
                ledger.record_score(keys[i], scorer.info, score)
        progress.advance(len(part))
    progress.advance(0, force=True)
    scores = [found[key] for key in keys]
    stats.prompt_tokens = sum(s.tokens for s in scores if s is not None)
    stats.wall_seconds = time.monotonic() - started
    return scores, stats


def _chunk_scores(scorer, pairs: Sequence[tuple[str, str]], todo: list[int], chunk: int):
    """(indices, their scores) chunk by chunk: from the scorer's workers in completion order when
    it has them (`ray_scoring.RayScorer`), else scored here one chunk after another."""
    if hasattr(scorer, "score_in_chunks"):
        chunk = max(1, min(chunk, -(-len(todo) // (4 * max(1, scorer.workers)))))
    parts = [todo[start : start + chunk] for start in range(0, len(todo), chunk)]
    if hasattr(scorer, "score_in_chunks"):
        done = scorer.score_in_chunks([(n, [pairs[i] for i in part]) for n, part in enumerate(parts)])
        return ((parts[n], part_scores) for n, part_scores in done)
    return ((part, scorer.score([pairs[i] for i in part])) for part in parts)
