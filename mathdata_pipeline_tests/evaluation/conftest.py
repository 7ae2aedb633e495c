"""Helpers of the evaluation tests: tiny mixtures from real GSM8K training problems (the tiny llama
model with the embedded SmolLM2 tokenizer, `tiny_llama`, and `smol_tokenizer` are session fixtures
of the top-level conftest.py, shared with the influence chain in mixtures/)."""

from __future__ import annotations

import pyarrow as pa

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
