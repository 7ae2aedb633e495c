"""Log-probability scoring by Ray workers (`common.ray_map`), for `logprob.score_many`.

Every worker loads its own `BatchScorer` from the same settings (on a GPU node when
`gpus_per_worker` asks for one). The Dagster step keeps the request ledger: it sends only the
pairs the ledger lacks, and records each chunk's scores as the chunk comes back, so a worker lost
mid-run costs only the chunk it held. Ledger keys are those of `BatchScorer` (`scorer_info`), so
scores computed locally and on Ray are one cache. The model folder must be on a path every node
can read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from mathdata_pipeline.common.ray_map import RayCompute, RayPool
from mathdata_pipeline.engines.base import TokenScore
from mathdata_pipeline.evaluation.logprob import BatchScorer, scorer_info


def _score(scorer: BatchScorer, pairs: list[tuple[str, str]]) -> list[TokenScore | None]:
    return scorer.score(pairs)


class RayScorer:
    """What `score_many` and `scoring.score_models` need of a scorer (`info`, `chat_prompt`), with
    the scores computed by a pool of Ray workers (`score_in_chunks`).

    Parameters: `compute` (the cluster and the workers' resources); then the arguments of
    `BatchScorer`: `source` (a transformers folder or hub id; only its tokenizer is loaded here, for
    `chat_prompt`), `model_id`, `max_tokens`, `batch_tokens`. Call `close` to stop the workers.
    """

    def __init__(
        self,
        compute: RayCompute,
        source: str | Path,
        *,
        model_id: str,
        max_tokens: int = 4096,
        batch_tokens: int = 8192,
    ):
        from transformers import AutoTokenizer

        self.info = scorer_info(source, model_id, max_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        settings = {"source": str(source), "model_id": model_id, "max_tokens": max_tokens, "batch_tokens": batch_tokens}
        self.pool = RayPool(BatchScorer, settings, compute)

    @property
    def workers(self) -> int:
        """Workers still alive."""
        return len(self.pool.live())

    def chat_prompt(self, question: str) -> str:
        """`question` as the user turn in the model's chat template, with the assistant opening."""
        messages = [{"role": "user", "content": question}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def score_in_chunks(
        self, chunks: Sequence[tuple[int, list[tuple[str, str]]]]
    ) -> Iterator[tuple[int, list[TokenScore | None]]]:
        """`(index, scores)` of each `(index, pairs)` chunk, in completion order."""
        return self.pool.map(_score, chunks)

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()
