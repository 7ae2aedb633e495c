"""Gradient features: batched per-example LoRA gradients against plain autograd, the Adam feature,
the warm-up's name-keyed state, the sparse projection, resumable shards, and one real SmolLM2 run."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mathdata_pipeline.common.templates import get_template
from mathdata_pipeline.influence.gradient_features import (
    OPTIMIZER_STATE_FILE,
    Example,
    GradientFeaturizer,
    SparseSignProjection,
    compute_feature_shards,
    encode_example,
    load_features,
    warmup_lora,
)

REPO = Path(__file__).resolve().parents[2]


def gsm8k_rows(data_root: Path, n: int) -> list[dict]:
    """The first `n` GSM8K train rows."""
    with gzip.open(data_root / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


def build_tiny_causal_lm(folder: Path, texts: list[str]) -> Path:
    """Save a tiny random LlamaForCausalLM (2 layers, hidden 64) and a 512-token byte-level BPE
    tokenizer trained on `texts` to `folder`, loadable by `load_causal_lm(folder)`."""
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


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, data_root) -> Path:
    rows = gsm8k_rows(data_root, 200)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), [r["question"] + r["answer"] for r in rows])


@pytest.fixture(scope="module")
def gsm8k_examples(data_root) -> list[Example]:
    return [
        Example(f"gsm8k-{i}", f"Question: {r['question']}\nAnswer: ", r["answer"])
        for i, r in enumerate(gsm8k_rows(data_root, 7))
    ]


def hand_gradients(featurizer: GradientFeaturizer, example: Example) -> np.ndarray:
    """One example's LoRA gradient by plain autograd: tokens built here, HF's own loss, backward,
    then the .grad of every LoRA weight in the featurizer's parameter order (float64)."""
    tok = featurizer.tokenizer
    prompt = tok(example.prompt, add_special_tokens=False).input_ids
    ids = prompt + tok(example.response, add_special_tokens=False).input_ids + [tok.eos_token_id]
    ids = ids[: featurizer.max_length]
    labels = [-100] * len(prompt) + ids[len(prompt) :]
    model = featurizer.model
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
    params = dict(model.named_parameters())
    grads = np.concatenate([params[name].grad.reshape(-1).double().numpy() for name in featurizer.parameter_names])
    model.zero_grad(set_to_none=True)
    return grads


def project_and_normalise(featurizer: GradientFeaturizer, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    projected = featurizer.projection.project(torch.from_numpy(vectors).float()).double().numpy()
    norms = np.linalg.norm(projected, axis=1)
    return projected / norms[:, None], norms


def test_batched_features_equal_per_example_autograd(tiny_lm, gsm8k_examples):
    featurizer = GradientFeaturizer(str(tiny_lm), proj_dim=512, max_length=200, batch_size=3)
    examples = gsm8k_examples[:5]
    lengths = [len(encode_example(featurizer.tokenizer, e, 200)[0]) for e in examples]
    assert len(set(lengths)) > 1 and 200 in lengths, "the batch must mix lengths and include a truncated example"
    vectors, norms = featurizer.features_with_norms(examples)
    grads = np.stack([hand_gradients(featurizer, e) for e in examples])
    expected, expected_norms = project_and_normalise(featurizer, grads)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 512)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-4)
    # A fresh adapter has B = 0, so the A gradients are exactly zero (module doc) and B's are not.
    a_size = featurizer.r * 64  # every q/k/v/o input is the hidden size 64
    first_a, first_b = grads[:, :a_size], grads[:, a_size : a_size + 64 * featurizer.r]
    assert not first_a.any() and np.abs(first_b).max() > 0


def test_warmup_state_and_adam_features_match_hand_computation(tiny_lm, gsm8k_examples, tmp_path):
    adapter = warmup_lora(str(tiny_lm), gsm8k_examples, tmp_path / "warm", steps=3, lr=1e-2, max_length=160, seed=0)
    info = json.loads((adapter / "warmup.json").read_text())
    assert info["mean_lr"] == pytest.approx(1e-2 * (0 + 1 + 0.5) / 3)  # linear schedule: warm-up 1 step, decay
    state = torch.load(adapter / OPTIMIZER_STATE_FILE, weights_only=True)

    featurizer = GradientFeaturizer(str(tiny_lm), adapter, proj_dim=512, max_length=160, batch_size=2, grad_type="adam")
    params = dict(featurizer.model.named_parameters())
    assert list(state) == featurizer.parameter_names
    for name in featurizer.parameter_names:
        assert state[name]["exp_avg"].shape == params[name].shape and int(state[name]["step"]) == 3
    assert any(params[n].abs().max() > 0 for n in featurizer.parameter_names if "lora_B" in n), "warm-up moved B"

    # A hand-made Adam state (random moments) replaces the warm-up's, keyed by name.
    rng = np.random.default_rng(5)
    sizes = [params[n].numel() for n in featurizer.parameter_names]
    m = rng.normal(0, 1e-3, sum(sizes))
    v = rng.uniform(1e-8, 1e-5, sum(sizes))
    offsets = np.cumsum([0] + sizes)
    hand_state = {
        name: {
            "exp_avg": torch.from_numpy(m[a:b]).reshape(params[name].shape),
            "exp_avg_sq": torch.from_numpy(v[a:b]).reshape(params[name].shape),
            "step": torch.tensor(3.0),
        }
        for name, a, b in zip(featurizer.parameter_names, offsets[:-1], offsets[1:])
    }
    torch.save(hand_state, adapter / OPTIMIZER_STATE_FILE)
    featurizer = GradientFeaturizer(str(tiny_lm), adapter, proj_dim=512, max_length=160, batch_size=2, grad_type="adam")
    examples = gsm8k_examples[:3]
    grads = np.stack([hand_gradients(featurizer, e) for e in examples])
    assert np.abs(grads[:, : featurizer.r * 64]).max() > 0, "after a warm-up the A gradients are not zero"
    m2 = 0.9 * m + 0.1 * grads
    v2 = 0.999 * v + 0.001 * grads**2
    expected, _ = project_and_normalise(featurizer, m2 / np.sqrt(v2 + 1e-8))
    np.testing.assert_allclose(featurizer.features(examples), expected, atol=1e-5)


def test_bad_inputs_are_named(tiny_lm, tmp_path):
    featurizer = GradientFeaturizer(str(tiny_lm), proj_dim=64, max_length=8)
    with pytest.raises(ValueError, match="'e1'.*'response'"):
        featurizer.features([Example("e1", "What is 1+1?", " ")])
    with pytest.raises(ValueError, match="'e2'.*'prompt'.*max_length=8"):
        featurizer.features([Example("e2", "a long prompt " * 10, "2")])
    with pytest.raises(ValueError, match="adapter_dir"):
        GradientFeaturizer(str(tiny_lm), grad_type="adam")
    with pytest.raises(ValueError, match="multiple"):
        SparseSignProjection(100, 10, nonzeros=4)


PROJECT_SNIPPET = """
import numpy as np, torch
from mathdata_pipeline.influence.gradient_features import SparseSignProjection
x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 5000))).float()
np.save({out!r}, SparseSignProjection(5000, 256, seed=7).project(x).numpy())
"""


def test_projection_is_deterministic_and_batch_independent(tmp_path):
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 5000))).float()
    here = SparseSignProjection(5000, 256, seed=7).project(x).numpy()
    out = tmp_path / "fresh.npy"
    subprocess.run([sys.executable, "-c", PROJECT_SNIPPET.format(out=str(out))], check=True, cwd=REPO)
    assert np.array_equal(np.load(out), here), "a fresh process must build the same matrix"
    assert np.array_equal(SparseSignProjection(5000, 256, seed=7).project(x).numpy(), here)
    assert np.array_equal(SparseSignProjection(5000, 256, seed=7).project(x[1:]).numpy(), here[1:])
    assert not np.allclose(SparseSignProjection(5000, 256, seed=8).project(x).numpy(), here)


def test_projection_preserves_inner_products():
    rng = np.random.default_rng(0)
    dim, k = 50_000, 2048
    projection = SparseSignProjection(dim, k, seed=0)
    errors = []
    for cosine in (0.0, 0.5, 0.9):
        for _ in range(10):
            a, noise = rng.normal(size=dim), rng.normal(size=dim)
            b = cosine * a / np.linalg.norm(a) + np.sqrt(1 - cosine**2) * noise / np.linalg.norm(noise)
            pa, pb = projection.project(torch.from_numpy(np.stack([a, b])).float()).double().numpy()
            assert np.linalg.norm(pa) / np.linalg.norm(a) == pytest.approx(1, abs=0.1)
            errors.append(
                pa @ pb / (np.linalg.norm(pa) * np.linalg.norm(pb)) - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            )
    assert np.max(np.abs(errors)) < 0.1  # the standard deviation is about sqrt(1 / k) = 0.022
    assert abs(np.mean(errors)) < 0.02


CRASH_SCRIPT = """
import sys, time
from mathdata_pipeline.influence.gradient_features import Example, GradientFeaturizer, compute_feature_shards

class HangsAfterFirstShardFeaturizer(GradientFeaturizer):
    '''Fault-injecting fake: computes the first shard, then hangs until killed.'''
    calls = 0

    def features_with_norms(self, examples):
        self.calls += 1
        if self.calls > 1:
            time.sleep(600)
        return super().features_with_norms(examples)

examples = [Example(f"ex-{{i}}", f"Question {{i}}: what is {{i}} plus {{i}}?", f"It is {{2 * i}}.") for i in range(7)]
featurizer = HangsAfterFirstShardFeaturizer({model!r}, proj_dim=128, max_length=48, batch_size=2)
compute_feature_shards(featurizer, examples, {out!r}, shard_size=3)
"""


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the worker exited early: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.2)


def test_shards_resume_after_kill_and_recompute_on_settings_change(tiny_lm, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    worker = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT.format(model=str(tiny_lm), out=str(killed))],
        cwd=REPO,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        wait_for(killed / "shard-00000.npz", worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert not (killed / "shard-00001.npz").exists()
    with pytest.raises(ValueError, match="shard-00001.npz: shard missing"):
        load_features(killed)
    first = (killed / "shard-00000.npz").stat()

    examples = [Example(f"ex-{i}", f"Question {i}: what is {i} plus {i}?", f"It is {2 * i}.") for i in range(7)]
    featurizer = GradientFeaturizer(str(tiny_lm), proj_dim=128, max_length=48, batch_size=2)
    paths = compute_feature_shards(featurizer, examples, killed, shard_size=3)
    assert [p.name for p in paths] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    again = (killed / "shard-00000.npz").stat()
    assert (again.st_mtime_ns, again.st_ino) == (first.st_mtime_ns, first.st_ino), "shard 0 was recomputed"
    compute_feature_shards(featurizer, examples, clean, shard_size=3)
    ids, resumed = load_features(killed)
    clean_ids, uninterrupted = load_features(clean)
    assert ids == clean_ids == [e.example_id for e in examples]
    np.testing.assert_allclose(resumed, uninterrupted, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(resumed, axis=1), 1, atol=1e-5)

    other = GradientFeaturizer(str(tiny_lm), proj_dim=128, proj_seed=1, max_length=48, batch_size=2)
    assert other.settings_key() != featurizer.settings_key()
    compute_feature_shards(other, examples, killed, shard_size=3)
    assert (killed / "shard-00000.npz").stat().st_mtime_ns != first.st_mtime_ns
    np.testing.assert_allclose(load_features(killed)[1], other.features(examples), atol=1e-6)


@pytest.mark.slow
def test_embedded_smollm2_gives_finite_unit_features(data_root):
    template = get_template("alpaca")
    rows = sorted(gsm8k_rows(data_root, 40), key=lambda r: len(r["question"] + r["answer"]))[:4]
    examples = [Example(f"g{i}", template.prompt(r["question"]), r["answer"]) for i, r in enumerate(rows)]
    featurizer = GradientFeaturizer("embedded", proj_dim=1024, max_length=128, batch_size=4)
    assert featurizer.gradient_dim == 921_600  # 30 layers x (A: 4 x 8 x 576, B: (576 + 192 + 192 + 576) x 8)
    vectors, norms = featurizer.features_with_norms(examples)
    assert vectors.shape == (4, 1024) and np.isfinite(vectors).all() and (norms > 0).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = vectors @ vectors.T
    assert (cosines[~np.eye(4, dtype=bool)] < 0.999).all(), "different examples must not give the same feature"
