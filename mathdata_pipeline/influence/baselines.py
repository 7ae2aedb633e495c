"""The pruning baselines of METHODS.md §5 computed for the training rows: perplexity under the
scoring model (the model and template of the gradient features) and embedding similarity to the
validation questions (random scores come with the influence table)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.hf_models import load_causal_lm
from mathdata_pipeline.common.templates import get_template
from mathdata_pipeline.influence.devices import resolve_device, resolve_dtype
from mathdata_pipeline.influence.examples import as_examples, single_value
from mathdata_pipeline.influence.scores import embedding_similarity, perplexity_scores
from mathdata_pipeline.qads.embeddings import SentenceEmbedder, render_for_embedding


def baseline_scores(
    train_ids: Sequence[str],
    solutions: pa.Table,
    validation: pa.Table,
    *,
    max_length: int,
    max_batch_tokens: int = 4096,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(perplexity, embedding similarity) aligned with `train_ids`.

    Inputs: the training ids (solutions' `sample_id`); the solutions (sample_id, question,
    response); the validation set (`reference_responses`, whose `scoring_model` and `template`
    the perplexity uses); truncation, token budget, `device` and `dtype` (`devices.py`).
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
    similarity = embedding_similarity(embedder.embed(texts), embedder.embed(questions)) if texts else np.zeros(0)
    resolved = resolve_device(device)
    lm, tokenizer = load_causal_lm(single_value(validation, "scoring_model"), dtype=resolve_dtype(dtype, resolved))
    examples = as_examples(rows, "sample_id", get_template(single_value(validation, "template")), tokenizer)
    perplexity = perplexity_scores(
        lm.to(resolved), tokenizer, examples, max_length=max_length, max_batch_tokens=max_batch_tokens
    )
    return perplexity, similarity
