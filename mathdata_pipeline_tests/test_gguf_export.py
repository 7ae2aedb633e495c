"""GGUF export of transformers weights: the untrained embedded SmolLM2, exported to F16, must behave
like the shipped Q4_1 file on llama.cpp and load back into transformers with the same tensors."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from mathdata_pipeline.engines.base import Request, SamplingParams
from mathdata_pipeline.engines.local import LocalEngine, embedded_gguf_path
from mathdata_pipeline.methods.gguf_export import export_gguf, permute_for_llama_cpp
from mathdata_pipeline.methods.hf_models import load_causal_lm

QUESTION_PREFIX = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                   "<|im_start|>user\n")
CHAT_PROMPT = "<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n"
SCORED = [
    (QUESTION_PREFIX, "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                      "How many clips did Natalia sell altogether?<|im_end|>"),
    (CHAT_PROMPT, "12 plus 30 is 42."),
]
# Measured: the F16 export and the Q4_1 original differ by 0.013-0.015 nats per token (llama.cpp
# quantizes activations for Q4_1 dot products; the F16 path does not).
SCORE_TOLERANCE_PER_TOKEN = 0.05


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, hf_dir, gguf_path): the embedded model, saved by transformers and exported to F16."""
    model, tokenizer = load_causal_lm("embedded")
    hf_dir = tmp_path_factory.mktemp("embedded") / "hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    out = export_gguf(hf_dir, embedded_gguf_path(), hf_dir.parent / "embedded-f16.gguf", dtype="f16")
    return model, hf_dir, out


def _greedy(engine: LocalEngine, prompt: str) -> str:
    (_, completion), = engine.generate([Request(prompt=prompt, params=SamplingParams(max_tokens=16, stop=("<|im_end|>",)))])
    return completion.text


def test_exported_gguf_matches_the_original_on_llama_cpp(exported):
    _, _, path = exported
    with LocalEngine(model_path=path, n_ctx=512) as new, LocalEngine(n_ctx=512) as original:
        assert new.tokenize(QUESTION_PREFIX) == original.tokenize(QUESTION_PREFIX)  # tokenizer metadata copied
        for prompt in (QUESTION_PREFIX, CHAT_PROMPT):
            new_text, old_text = _greedy(new, prompt), _greedy(original, prompt)
            assert new_text.strip()
            assert new_text.split()[:3] == old_text.split()[:3]  # measured: they part after 3 words at the earliest
        for prompt, completion in SCORED:
            a, b = new.score(prompt, completion), original.score(prompt, completion)
            assert a.tokens == b.tokens
            assert abs(a.logprob - b.logprob) / a.tokens < SCORE_TOLERANCE_PER_TOKEN


def test_metadata_is_copied_and_file_type_is_f16(exported):
    _, _, path = exported
    template, written = gguf.GGUFReader(str(embedded_gguf_path())), gguf.GGUFReader(str(path))
    model_keys = [k for k in template.fields if not k.startswith("GGUF.")]
    assert set(model_keys) == {k for k in written.fields if not k.startswith("GGUF.")}
    for key in model_keys:
        if key != "general.file_type":
            assert written.fields[key].contents() == template.fields[key].contents(), key
    assert written.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    types = {t.name: t.tensor_type for t in written.tensors}
    assert "output.weight" not in types  # SmolLM2 ties lm_head to the token embeddings
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_q_and_k_are_stored_in_llama_cpp_row_order(exported):
    """The embedded model's weights are the Q4_1 file dequantized and un-permuted by transformers, so
    re-permuting them must reproduce the file's dequantized tensors exactly."""
    model, _, _ = exported
    template = {t.name: t for t in gguf.GGUFReader(str(embedded_gguf_path())).tensors}
    attention = model.model.layers[3].self_attn
    for name, weight, heads in (("blk.3.attn_q.weight", attention.q_proj.weight, model.config.num_attention_heads),
                                ("blk.3.attn_k.weight", attention.k_proj.weight, model.config.num_key_value_heads)):
        stored = gguf.quants.dequantize(template[name].data, template[name].tensor_type)
        hf = weight.detach().numpy()
        assert np.array_equal(permute_for_llama_cpp(hf, heads), stored)
        assert not np.array_equal(hf, stored)  # the permutation is not the identity


def test_round_trip_through_transformers(exported):
    model, _, path = exported
    reloaded, _ = load_causal_lm(str(path))
    original = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        expected = original[name]
        # float16 storage: relative rounding error at most 2**-11, plus underflow near zero
        assert torch.allclose(tensor, expected, rtol=2 ** -10, atol=1e-6), name


def test_mismatched_template_is_refused(exported, tmp_path):
    _, hf_dir, _ = exported
    config_path = hf_dir / "config.json"
    broken = tmp_path / "hf"
    broken.mkdir()
    for item in hf_dir.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.json").unlink()
    (broken / "config.json").write_text(config_path.read_text().replace('"num_key_value_heads": 3', '"num_key_value_heads": 9'))
    with pytest.raises(ValueError, match="head_count_kv"):
        export_gguf(broken, embedded_gguf_path(), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
