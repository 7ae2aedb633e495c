"""Tiny randomly initialised causal LMs of several architectures, built from a config inside the
tests (no download): the architecture tests of training, export and scoring use them."""

from __future__ import annotations

from pathlib import Path

ARCHITECTURES = ("llama", "qwen2")


def save_tiny_causal_lm(folder: Path, architecture: str, seed: int = 0) -> Path:
    """Save a 2-layer, 64-wide random `architecture` ("llama" or "qwen2") causal LM to `folder`
    with the embedded SmolLM2's tokenizer (its ChatML template, so the question prefix and the
    reward format are real); return `folder`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from mathdata_pipeline.common.hf_models import embedded_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_class, model_class = classes[architecture]
    torch.manual_seed(seed)
    model_class(config_class(**shape)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
