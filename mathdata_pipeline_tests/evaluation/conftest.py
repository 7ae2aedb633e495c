"""Fixtures of the evaluation tests: tiny mixtures from real GSM8K training problems, a tiny llama
model built from a config (with the embedded SmolLM2 tokenizer), and its tokenizer."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA, mixture_row_id


def tiny_mixture(name: str, problems: list[dict]) -> pa.Table:
    """A mixture table (MIXTURE_SCHEMA) of GSM8K training problems as user/assistant pairs, plus
    one two-turn general conversation."""
    rows = []
    for i, p in enumerate(problems):
        rows.append(
            {
                "row_id": mixture_row_id(name, f"gsm8k-{i}"),
                "mixture": name,
                "kind": "reasoning",
                "source": "gsm8k",
                "origin": "seed",
                "messages": [
                    {"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": p["answer"]},
                ],
                "sample_id": f"ref-{i}",
                "config_hash": "test",
            }
        )
    rows.append(
        {
            "row_id": mixture_row_id(name, "general-0"),
            "mixture": name,
            "kind": "general",
            "source": "self_instruct",
            "origin": "general",
            "messages": [
                {"role": "user", "content": "Name a prime number."},
                {"role": "assistant", "content": "7 is a prime number."},
                {"role": "user", "content": "And an even one?"},
                {"role": "assistant", "content": "2 is the only even prime."},
            ],
            "config_hash": "test",
        }
    )
    return pa.Table.from_pylist(rows, schema=MIXTURE_SCHEMA)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded SmolLM2's tokenizer (fast, with its chat template)."""
    from transformers import AutoTokenizer

    from mathdata_pipeline.common.hf_models import embedded_checkpoint

    return AutoTokenizer.from_pretrained(embedded_checkpoint())


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smol_tokenizer) -> Path:
    """A 2-layer llama (hidden size 32) with seeded random weights and SmolLM2's tokenizer, saved
    once per session: trains and scores in well under a second per step on a CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder
