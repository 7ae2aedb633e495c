"""Shared fixtures of the influence tests: a tiny random Llama with a BPE tokenizer trained on
GSM8K text (built inside the test session, loadable by `load_causal_lm`), and GSM8K rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def gsm8k_rows(data_root: Path, n: int) -> list[dict]:
    """The first `n` GSM8K train rows."""
    with gzip.open(data_root / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


def build_tiny_causal_lm(folder: Path, texts: list[str]) -> Path:
    """Save a tiny random LlamaForCausalLM (2 layers, hidden 64) and a 512-token byte-level BPE
    tokenizer trained on `texts`, with a ChatML-style chat template, to `folder`, loadable by
    `load_causal_lm(folder)`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=["<unk>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, data_root) -> Path:
    """A tiny random Llama folder (see build_tiny_causal_lm), once per session."""
    rows = gsm8k_rows(data_root, 200)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), [r["question"] + r["answer"] for r in rows])
