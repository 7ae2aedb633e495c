"""GGUF export of transformers weights: the untrained embedded SmolLM2, exported to F16, must behave
like the shipped Q4_1 file on llama.cpp and load back into transformers with the same tensors."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from mathdata_pipeline.common.gguf_export import export_gguf, export_plan, permute_for_llama_cpp
from mathdata_pipeline.common.hf_models import embedded_checkpoint, load_causal_lm, model_config
from mathdata_pipeline.engines.base import Request, SamplingParams
from mathdata_pipeline.engines.local import LocalEngine, embedded_gguf_path

QUESTION_PREFIX = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n"
)
CHAT_PROMPT = "<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n"
SCORED = [
    (
        QUESTION_PREFIX,
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether?<|im_end|>",
    ),
    (CHAT_PROMPT, "12 plus 30 is 42."),
]
# Measured: the F16 export and the Q4_1 original differ by 0.013-0.015 nats per token (llama.cpp
# quantizes activations for Q4_1 dot products; the F16 path does not).
SCORE_TOLERANCE_PER_TOKEN = 0.05


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, hf_dir, gguf_path): the embedded model, its dequantized transformers checkpoint and
    that checkpoint exported to F16."""
    model, _ = load_causal_lm("embedded")
    hf_dir = embedded_checkpoint()
    out = export_gguf(
        hf_dir, embedded_gguf_path(), tmp_path_factory.mktemp("export") / "embedded-f16.gguf", dtype="f16"
    )
    return model, hf_dir, out


def _greedy(engine: LocalEngine, prompt: str) -> str:
    ((_, completion),) = engine.generate(
        [Request(prompt=prompt, params=SamplingParams(max_tokens=16, stop=("<|im_end|>",)))]
    )
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
    """The embedded model (read from its cached checkpoint) is the Q4_1 file dequantized, with q and
    k un-permuted by transformers, so re-permuting them must reproduce the file's tensors exactly."""
    model, hf_dir, _ = exported
    assert model.name_or_path == str(hf_dir)
    template = {t.name: t for t in gguf.GGUFReader(str(embedded_gguf_path())).tensors}
    down = template["blk.3.ffn_down.weight"]
    assert np.array_equal(
        model.model.layers[3].mlp.down_proj.weight.detach().numpy(), gguf.quants.dequantize(down.data, down.tensor_type)
    )
    attention = model.model.layers[3].self_attn
    for name, weight, heads in (
        ("blk.3.attn_q.weight", attention.q_proj.weight, model.config.num_attention_heads),
        ("blk.3.attn_k.weight", attention.k_proj.weight, model.config.num_key_value_heads),
    ):
        stored = gguf.quants.dequantize(template[name].data, template[name].tensor_type)
        hf = weight.detach().numpy()
        assert np.array_equal(permute_for_llama_cpp(hf, heads), stored)
        assert not np.array_equal(hf, stored)  # the permutation is not the identity


def test_every_written_tensor_is_the_checkpoint_in_f16(exported):
    """Read back with the GGUF reader: each tensor equals the checkpoint's (q and k in llama.cpp row
    order), up to float16 rounding of matrices; norms stay float32 and exact."""
    model, _, path = exported
    config = model.config
    by_gguf_name = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    written = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    checked = 0
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":  # tied to the token embeddings, not written
            continue
        expected = tensor.numpy()
        if hf_name.endswith("q_proj.weight"):
            expected = permute_for_llama_cpp(expected, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            expected = permute_for_llama_cpp(expected, config.num_key_value_heads)
        stored = written[by_gguf_name.get_name(hf_name, try_suffixes=(".weight", ".bias"))]
        values = gguf.quants.dequantize(stored.data, stored.tensor_type).reshape(expected.shape)
        if expected.ndim == 1:
            assert np.array_equal(values, expected), hf_name
        else:  # relative rounding at most 2**-11, plus underflow near zero
            assert np.allclose(values, expected, rtol=2**-10, atol=1e-6), hf_name
        checked += 1
    assert checked == len(written)


def test_mismatched_template_is_refused(exported, tmp_path):
    _, hf_dir, _ = exported
    config_path = hf_dir / "config.json"
    broken = tmp_path / "hf"
    broken.mkdir()
    for item in hf_dir.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.json").unlink()
    (broken / "config.json").write_text(
        config_path.read_text().replace('"num_key_value_heads": 3', '"num_key_value_heads": 9')
    )
    with pytest.raises(ValueError, match="head_count_kv"):
        export_gguf(broken, embedded_gguf_path(), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_export_plan_says_why_a_checkpoint_cannot_be_exported(tmp_path):
    smollm2 = model_config("embedded")
    assert export_plan(smollm2, "embedded") == (embedded_gguf_path(), "")
    assert export_plan(smollm2, str(embedded_gguf_path())) == (embedded_gguf_path(), "")
    for config, template, reason in (
        (smollm2, "", "gguf_template is empty"),
        ({**smollm2, "model_type": "qwen2"}, "embedded", "architecture 'qwen2' has no GGUF export"),
        ({**smollm2, "num_hidden_layers": 2}, "embedded", "llama.block_count is 30, the checkpoint has 2"),
        (smollm2, str(tmp_path / "missing.gguf"), "missing.gguf does not exist"),
    ):
        path, why = export_plan(config, template)
        assert path is None and reason in why


def test_export_plan_without_a_template_needs_no_gguf_package(monkeypatch):
    # a GPU machine serving the generator with vLLM may lack the gguf package: the plan must not import it
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)
    assert export_plan({"model_type": "qwen2"}, "") == (None, "no GGUF template given (gguf_template is empty)")
    template, why = export_plan({"model_type": "qwen2"}, "embedded")
    assert template is None and "qwen2" in why


def test_a_template_is_parsed_once_per_file_contents(tmp_path):
    import os
    import shutil

    from mathdata_pipeline.common.gguf_export import template_reader

    copy = tmp_path / "template.gguf"
    shutil.copyfile(embedded_gguf_path(), copy)
    first = template_reader(copy)
    assert template_reader(copy) is first
    os.utime(copy, ns=(0, 0))  # a rewritten file (new modification time) is parsed again
    assert template_reader(copy) is not first
    assert template_reader(copy).fields["general.architecture"].contents() == "llama"
