"""QaDS embeddings on real parts: all-MiniLM-L6-v2 on GSM8K questions, SmolLM2 hidden states,
and the Parquet embedding cache."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.qads.embeddings import (
    EmbeddingCache,
    HiddenStateEmbedder,
    SentenceEmbedder,
    build_embedder,
    embed_with_cache,
    render_for_embedding,
    render_messages,
)

PARAPHRASE_OF_FIRST = (
    "In April Natalia sold clips to 48 friends, and in May she sold half that number. "
    "What is the total number of clips she sold over the two months?"
)


@pytest.fixture(scope="module")
def gsm8k_questions(data_root) -> list[str]:
    with gzip.open(data_root / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(next(fh))["question"] for _ in range(24)]


@pytest.fixture(scope="module")
def sentence_embedder() -> SentenceEmbedder:
    return SentenceEmbedder("embedded")


class CountingEmbedder:
    """The real embedder, recording every text it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.model_key, self.seen = inner, inner.model_key, []

    def embed(self, texts):
        self.seen.extend(texts)
        return self.inner.embed(texts)


def test_minilm_on_gsm8k_questions(sentence_embedder, gsm8k_questions):
    vectors = sentence_embedder.embed(gsm8k_questions + [PARAPHRASE_OF_FIRST])
    assert vectors.shape == (len(gsm8k_questions) + 1, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors[1:] @ vectors[0]
    assert similarity[-1] > 0.8  # the paraphrase
    assert similarity[-1] > similarity[:-1].max() + 0.2  # every unrelated question is much further
    assert sentence_embedder.embed([]).shape == (0, 384)


def test_model_keys_name_the_settings_and_are_file_safe(tmp_path):
    keys = {
        SentenceEmbedder("embedded").model_key,
        build_embedder("hidden_state").model_key,
        build_embedder("hidden_state", layer=-2).model_key,
        build_embedder("hidden_state", pooling="last").model_key,
        build_embedder("hidden_state", max_length=128).model_key,
        SentenceEmbedder("sentence-transformers/all-mpnet-base-v2").model_key,
        SentenceEmbedder(str(tmp_path)).model_key,
    }
    assert len(keys) == 7
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", key) for key in keys)
    assert SentenceEmbedder("embedded", batch_size=4).model_key == SentenceEmbedder("embedded").model_key
    with pytest.raises(ValueError, match="unknown embedder kind"):
        build_embedder("tfidf")
    with pytest.raises(ValueError, match="pooling"):
        HiddenStateEmbedder(pooling="max")


def test_rendering_of_reasoning_and_chat_rows():
    text = render_for_embedding("What is 2 + 3?", "2 + 3 = 5. The answer is 5.")
    assert text == "User: What is 2 + 3?\n\nAssistant: 2 + 3 = 5. The answer is 5."
    assert (
        render_messages(
            [
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "2 + 3 = 5. The answer is 5."},
            ]
        )
        == text
    )
    chat = render_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert chat == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Bye"
    with pytest.raises(ValueError, match=r"messages\[1\]\.content"):
        render_messages([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}])


def test_cache_embeds_each_text_once_and_only_grows(tmp_path, sentence_embedder, gsm8k_questions):
    texts = gsm8k_questions[:10]
    path = tmp_path / "cache" / "vectors.parquet"
    counting = CountingEmbedder(sentence_embedder)
    first, hits, misses = embed_with_cache(texts + [texts[0]], counting, EmbeddingCache(str(path)))
    assert (hits, misses) == (0, 11) and counting.seen == texts  # the repeated text is embedded once
    np.testing.assert_array_equal(first[0], first[10])

    counting.seen.clear()
    again, hits, misses = embed_with_cache(texts, counting, EmbeddingCache(path))
    assert (hits, misses) == (10, 0) and counting.seen == []
    np.testing.assert_array_equal(again, first[:10])

    grown, hits, misses = embed_with_cache([gsm8k_questions[10]] + texts, counting, EmbeddingCache(path))
    assert (hits, misses) == (10, 1) and counting.seen == [gsm8k_questions[10]]
    np.testing.assert_array_equal(grown[1:], first[:10])
    np.testing.assert_allclose(grown[0], sentence_embedder.embed([gsm8k_questions[10]])[0], atol=1e-6)

    table = pq.read_table(path)
    assert table.num_rows == 11 and table.schema.field("key").type == pa.string()
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert sorted(p.name for p in path.parent.iterdir()) == ["vectors.parquet"]  # no temporary file left

    with pytest.raises(ValueError, match="384-d"):
        EmbeddingCache(path).add(["other"], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        embed_with_cache(["fine", None], counting, EmbeddingCache(path))


@pytest.fixture(scope="session")
def smollm2_folder() -> str:
    """The embedded SmolLM2 as a transformers folder (the dequantized copy in the model cache)."""
    from mathdata_pipeline.common.hf_models import embedded_checkpoint

    return str(embedded_checkpoint())


@pytest.mark.slow
def test_hidden_state_pooling_and_padding_invariance(smollm2_folder, gsm8k_questions):
    short, long = "Tom has 3 apples and buys 4 more. How many apples does he have?", gsm8k_questions[2]
    mean, last = (
        HiddenStateEmbedder(smollm2_folder, pooling="mean"),
        HiddenStateEmbedder(smollm2_folder, pooling="last"),
    )
    for embedder in (mean, last):
        alone = embedder.embed([short])
        batched = embedder.embed([long, short, "x"])
        assert batched.shape == (3, 576) and batched.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(batched[1], alone[0], atol=1e-4)
    assert float(mean.embed([short])[0] @ last.embed([short])[0]) < 0.99
    with pytest.raises(ValueError, match="layer 99 is out of range"):
        HiddenStateEmbedder(smollm2_folder, layer=99).embed([short])
