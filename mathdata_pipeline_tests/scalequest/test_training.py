"""ScaleQuest generator training on the real SmolLM2 at tiny scale (QFT then QPO, LoRA, TRL), on
tiny random Qwen2 and Llama models (any causal LM trains; the GGUF export is skipped with a reason),
and the QPO rewrite prompts and their parser."""

from __future__ import annotations

import gzip
import json
import math

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mathdata_pipeline.common.gguf_export import permute_for_llama_cpp
from mathdata_pipeline.common.hf_models import load_causal_lm
from mathdata_pipeline.common.training import TrainedModel
from mathdata_pipeline.engines.base import Request, SamplingParams
from mathdata_pipeline.engines.local import LocalEngine, embedded_gguf_path
from mathdata_pipeline.scalequest.rewrite_prompts import (
    REWRITE_KINDS,
    parse_rewrite,
    preference_pairs,
    rewrite_messages,
)
from mathdata_pipeline.scalequest.training import (
    QFT_LEARNING_RATES,
    QPO_LEARNING_RATES,
    QftConfig,
    QpoConfig,
    qft_texts,
    train_qft,
    train_qpo,
)
from mathdata_pipeline_tests.common.tiny_models import ARCHITECTURES, save_tiny_causal_lm

PREFIX = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n"
)
END = "<|im_end|>"

# (chosen = a well-posed multi-step question, rejected = a vague or non-question)
PAIRS = [
    (
        "A shop sells pencils at $3 each and pens at $5 each. Maria buys 4 pencils and 2 pens. How much does she spend?",
        "How many pencils?",
    ),
    (
        "A train travels 240 km in 3 hours. At the same speed, how many kilometres does it travel in 5 hours?",
        "What is a train?",
    ),
    (
        "Tom has 18 apples. He gives one third of them to Sara and eats 2. How many apples does Tom have left?",
        "Apples are red.",
    ),
    ("The sum of two numbers is 45 and their difference is 9. What is the larger number?", "Find the number."),
    (
        "A rectangle has a perimeter of 36 cm and a length of 11 cm. What is its area in square centimetres?",
        "Tell me about rectangles.",
    ),
    (
        "Lena reads 25 pages a day. Her book has 310 pages and she has read 60. How many more days does she need?",
        "How long is a book?",
    ),
    ("If 3x + 7 = 31, what is the value of 2x - 5?", "Solve x."),
    (
        "A recipe uses 2 cups of flour for every 3 eggs. How many cups of flour are needed for 12 eggs?",
        "I like baking.",
    ),
]


def _first_questions(path, field, count):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line)[field] for _, line in zip(range(count), fh)]


@pytest.fixture(scope="module")
def seed_questions(data_root):
    """12 GSM8K and 12 MATH training questions."""
    return _first_questions(data_root / "gsm8k" / "gsm8k_train.jsonl.gz", "question", 12) + _first_questions(
        data_root / "math" / "math_train.jsonl.gz", "problem", 12
    )


@pytest.fixture(scope="module")
def qft(tmp_path_factory, seed_questions):
    """A tiny QFT run shared by the QFT and QPO tests (learning rate high enough to move weights)."""
    config = QftConfig(max_steps=12, grad_accum=1, max_length=128, learning_rate=1e-3, warmup_ratio=0.0)
    return train_qft(seed_questions, PREFIX, END, tmp_path_factory.mktemp("gen") / "qft", config)


def _generate(gguf_path) -> str:
    with LocalEngine(model_path=gguf_path, n_ctx=512) as engine:
        ((_, completion),) = engine.generate(
            [Request(prompt=PREFIX, params=SamplingParams(max_tokens=40, stop=(END,)))]
        )
    return completion.text


@pytest.mark.slow
def test_qft_trains_lora_layers_and_writes_a_loadable_generator(qft):
    out_dir = qft.hf_dir.parent
    assert sorted(p.name for p in out_dir.iterdir()) == ["hf", "model.gguf", "training.json"]
    assert not any(p.name.startswith(f".{out_dir.name}.") for p in out_dir.parent.iterdir())  # work folder renamed
    assert TrainedModel.load(out_dir) == qft
    assert qft.steps == 12 and len(qft.train_loss) == 12 and all(math.isfinite(x) for x in qft.train_loss)
    assert np.mean(qft.train_loss[-4:]) < np.mean(qft.train_loss[:4])
    assert qft.config["kind"] == "qft" and qft.config["examples"] == 24 and qft.wall_seconds > 0

    # The base weights are the embedded Q4_1 file dequantized: LoRA-targeted matrices moved, the rest did not.
    trained = load_file(qft.hf_dir / "model.safetensors")
    template = {t.name: t for t in gguf.GGUFReader(str(embedded_gguf_path())).tensors}

    def base(name):
        return gguf.quants.dequantize(template[name].data, template[name].tensor_type)

    q = trained["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert not np.allclose(permute_for_llama_cpp(q, 9), base("blk.0.attn_q.weight"), atol=1e-5)
    assert not np.allclose(
        trained["model.layers.5.self_attn.v_proj.weight"].numpy(), base("blk.5.attn_v.weight"), atol=1e-5
    )
    assert np.array_equal(trained["model.layers.0.mlp.down_proj.weight"].numpy(), base("blk.0.ffn_down.weight"))

    assert _generate(qft.gguf_path).strip()


@pytest.mark.slow
def test_qpo_moves_the_qft_model_towards_the_chosen_questions(qft, tmp_path):
    config = QpoConfig(max_steps=4, per_device_batch=2, grad_accum=1, learning_rate=1e-4, warmup_steps=0, eval_pairs=2)
    qpo = train_qpo(PAIRS, PREFIX, END, str(qft.hf_dir), tmp_path / "qpo", config)
    assert qpo.steps == 4 and all(math.isfinite(x) for x in qpo.train_loss)
    assert qpo.train_loss[0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step one
    assert qpo.config["examples"] == 6 and qpo.config["eval_examples"] == 2 and "eval_loss" in qpo.eval_metrics

    before, after = load_file(qft.hf_dir / "model.safetensors"), load_file(qpo.hf_dir / "model.safetensors")
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )
    assert _preference_margin(qpo.hf_dir) > _preference_margin(qft.hf_dir)
    assert _generate(qpo.gguf_path).strip()


def _preference_margin(hf_dir) -> float:
    """Mean over PAIRS of log p(chosen | prefix) - log p(rejected | prefix), with transformers."""
    model, tokenizer = load_causal_lm(str(hf_dir))
    prompt_ids = tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
    margins = []
    with torch.no_grad():
        for chosen, rejected in PAIRS:
            logps = []
            for question in (chosen, rejected):
                ids = prompt_ids + tokenizer(question + END, add_special_tokens=False)["input_ids"]
                logits = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
                targets = torch.tensor(ids[1:])
                logps.append(logits[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :].sum().item())
            margins.append(logps[0] - logps[1])
    return float(np.mean(margins))


@pytest.fixture(scope="module")
def tiny_bases(tmp_path_factory) -> dict:
    """{architecture: folder of a tiny random causal LM}."""
    return {arch: save_tiny_causal_lm(tmp_path_factory.mktemp(arch), arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("architecture, use_lora", [("qwen2", True), ("llama", False)])
def test_qft_and_qpo_train_any_causal_lm(architecture, use_lora, tiny_bases, seed_questions, tmp_path):
    qft = train_qft(
        seed_questions,
        PREFIX,
        END,
        tmp_path / "qft",
        QftConfig(
            base=str(tiny_bases[architecture]),
            use_lora=use_lora,
            max_steps=3,
            max_length=64,
            learning_rate=1e-3,
            warmup_ratio=0.0,
        ),
    )
    assert qft.steps == 3 and len(qft.train_loss) == 3 and all(math.isfinite(x) for x in qft.train_loss)
    assert sorted(p.name for p in (tmp_path / "qft").iterdir()) == ["hf", "training.json"]
    # no GGUF, and the reason says why: Qwen2 has no export, a 2-layer Llama does not fit the SmolLM2 template
    expected_reason = (
        "architecture 'qwen2'" if architecture == "qwen2" else "llama.block_count is 30, the checkpoint has 2"
    )
    assert qft.gguf_path is None and expected_reason in qft.gguf_note
    assert qft.precision == {"device": "cpu", "weights": "float32", "mixed": None}
    model, _ = load_causal_lm(str(qft.hf_dir), device="cpu")
    assert model.config.model_type == architecture

    config = QpoConfig(use_lora=use_lora, max_steps=2, per_device_batch=2, grad_accum=1, warmup_steps=0, eval_pairs=2)
    qpo = train_qpo(PAIRS, PREFIX, END, str(qft.hf_dir), tmp_path / "qpo", config)
    assert qpo.config["learning_rate"] == QPO_LEARNING_RATES["lora" if use_lora else "full"]
    assert qpo.steps == 2 and qpo.train_loss[0] == pytest.approx(math.log(2), abs=1e-4)
    assert qpo.config["examples"] == 6 and "eval_loss" in qpo.eval_metrics
    before, after = load_file(qft.hf_dir / "model.safetensors"), load_file(qpo.hf_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[name], after[name])  # a few steps at the default rate move the weights


def test_learning_rates_follow_the_lora_choice():
    assert QftConfig().learning_rate == QFT_LEARNING_RATES["lora"] == 2e-4
    assert QftConfig(use_lora=False).learning_rate == QFT_LEARNING_RATES["full"] == 2e-5
    assert QpoConfig().learning_rate == 2.5e-5 and QpoConfig(use_lora=False).learning_rate == 5e-7
    assert QpoConfig(learning_rate=1e-4).learning_rate == 1e-4
    with pytest.raises(ValueError, match="learning_rate"):
        QpoConfig(learning_rate=0.0)


@pytest.mark.gpu
def test_qft_on_cuda_trains_in_bfloat16(tiny_bases, seed_questions, tmp_path):
    config = QftConfig(base=str(tiny_bases["qwen2"]), max_steps=2, max_length=64, warmup_ratio=0.0, device="cuda")
    qft = train_qft(seed_questions, PREFIX, END, tmp_path / "qft", config)
    assert qft.precision == {"device": "cuda", "weights": "bfloat16", "mixed": "bf16"}
    assert all(math.isfinite(x) for x in qft.train_loss)


def test_bad_training_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"questions\[1\]"):
        qft_texts(["What is 2 + 2?", "  "], PREFIX, END)
    with pytest.raises(ValueError, match=r"pairs\[0\]"):
        train_qpo([("", "x")], PREFIX, END, "embedded", tmp_path / "qpo")
    assert qft_texts([" What is 2 + 2? "], PREFIX, END) == [PREFIX + "What is 2 + 2?" + END]


@pytest.mark.parametrize(
    "kind, text, expected",
    [
        (
            "difficulty",
            "Step 1 #Methods List#: ...\nStep 4 #Finally Rewritten Problem#: What is 3 + 4 times 2?",
            "What is 3 + 4 times 2?",
        ),
        ("difficulty", "**#Finally Rewritten Problem#:** What is 7 squared?  \n", "What is 7 squared?"),
        (
            "difficulty",
            "### Finally Rewritten Problem\n\nHow many primes are below 30?",
            "How many primes are below 30?",
        ),
        (
            "difficulty",
            "#Finally Rewritten Problem#: draft\n...\n#Finally Rewritten Problem#: final one?",
            "final one?",
        ),
        ("difficulty", "#Finally Rewritten Problem#: **Find x if 2x = 10.**", "Find x if 2x = 10."),
        ("difficulty", "#Rewritten Problem#: only the intermediate step", None),
        ("difficulty", "Step 4 #Finally Rewritten Problem#:   \n  ", None),
        (
            "solvability",
            "It is solvable.\nFINAL QUESTION: A box holds 12 eggs. How many eggs are in 5 boxes?",
            "A box holds 12 eggs. How many eggs are in 5 boxes?",
        ),
        ("solvability", "**FINAL QUESTION:** What is 15% of 80?", "What is 15% of 80?"),
        ("solvability", "### FINAL QUESTION\nWhat is 15% of 80?\n", "What is 15% of 80?"),
        ("solvability", "**Final Question**: What is 15% of 80?", "What is 15% of 80?"),
        ("solvability", "Step 4. FINAL QUESTION: What is 9 * 9?", "What is 9 * 9?"),
        ("solvability", "The final question asks for a sum, which is 12.", None),
        ("solvability", "FINAL QUESTION:", None),
        ("solvability", "#Finally Rewritten Problem#: wrong marker for this kind", None),
    ],
)
def test_parse_rewrite(kind, text, expected):
    assert parse_rewrite(text, kind) == expected


def test_rewrite_messages_embed_the_question_and_name_the_marker():
    for kind, marker in zip(REWRITE_KINDS, ("#Finally Rewritten Problem#:", "FINAL QUESTION:")):
        (message,) = rewrite_messages("  What is 2 + 2?  ", kind)
        assert message["role"] == "user" and "What is 2 + 2?" in message["content"] and marker in message["content"]
    with pytest.raises(ValueError, match="unknown rewrite kind"):
        rewrite_messages("What is 2 + 2?", "style")
    with pytest.raises(ValueError, match="unknown rewrite kind"):
        parse_rewrite("FINAL QUESTION: x", "style")


def test_preference_pairs_keep_real_rewrites_and_count_drops():
    originals = ["What is 2+2?", "How many legs does a cat have?", "Add 3 and 5.", "Name a prime."]
    rewrites = ["If Ann has 2 apples and buys 2 more, how many does she have?", None, "  add 3 AND 5. ", "   "]
    pairs, dropped = preference_pairs(originals, rewrites)
    assert pairs == [("If Ann has 2 apples and buys 2 more, how many does she have?", "What is 2+2?")]
    assert dropped == {"parse_failed": 1, "empty": 1, "unchanged": 1}
    with pytest.raises(ValueError, match="row 1"):
        preference_pairs(["a", ""], ["b", "c"])
    with pytest.raises(ValueError, match="2 originals but 1 rewrites"):
        preference_pairs(["a", "b"], ["c"])
