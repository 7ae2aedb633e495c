"""The pruning baselines of METHODS.md §5 computed for the training rows: perplexity under the
scoring model and embedding similarity to the validation questions (random scores come with
the influence table)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.hf_models import load_causal_lm
from mathdata_pipeline.influence.examples import as_examples
from mathdata_pipeline.influence.scores import embedding_similarity, perplexity_scores
from mathdata_pipeline.qads.embeddings import SentenceEmbedder, render_for_embedding


def baseline_scores(
    train_ids: Sequence[str], solutions: pa.Table, validation: pa.Table, *, model: str, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(perplexity, embedding similarity) aligned with `train_ids`.

    Inputs: the training ids (solutions' `sample_id`); the solutions (sample_id, question,
    response); the validation set (`reference_responses`); the scoring model and truncation.
    Embedding similarity compares with the sampled validation questions (all of V when none
    was sampled).
    """
    position = {sample_id: i for i, sample_id in enumerate(solutions.column("sample_id").to_pylist())}
    rows = solutions.take(pa.array([position[i] for i in train_ids], pa.int64()))
    texts = [
        render_for_embedding(q, r)
        for q, r in zip(rows.column("question").to_pylist(), rows.column("response").to_pylist())
    ]
    questions = (
        validation.filter(pc.field("kind") == "sampled").column("question").to_pylist()
        or validation.column("question").to_pylist()
    )
    embedder = SentenceEmbedder("embedded")
    similarity = embedding_similarity(embedder.embed(texts), embedder.embed(questions))
    lm, tokenizer = load_causal_lm(model)
    perplexity = perplexity_scores(lm, tokenizer, as_examples(rows, "sample_id"), max_length=max_length)
    return perplexity, similarity
