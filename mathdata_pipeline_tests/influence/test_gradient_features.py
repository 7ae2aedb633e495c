"""Gradient features: batched per-example LoRA gradients against plain autograd, token-budget
batches, bfloat16 against float32, the Adam feature from a warm-up checkpoint, the sparse
projection, resumable shards, and one real SmolLM2 run."""

from __future__ import annotations

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
from mathdata_pipeline.influence.devices import resolve_device, resolve_dtype
from mathdata_pipeline.influence.gradient_features import (
    OPTIMIZER_STATE_FILE,
    Example,
    GradientFeaturizer,
    SparseSignProjection,
    compute_feature_shards,
    encode_example,
    load_features,
    token_batches,
)
from mathdata_pipeline.influence.warmup import warmup_lora
from mathdata_pipeline_tests.influence.conftest import gsm8k_rows

REPO = Path(__file__).resolve().parents[2]


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
    featurizer = GradientFeaturizer(str(tiny_lm), proj_dim=512, max_length=200, max_batch_tokens=600)
    examples = gsm8k_examples[:5]
    lengths = [len(encode_example(featurizer.tokenizer, e, 200)[0]) for e in examples]
    assert len(set(lengths)) > 1 and 200 in lengths, "the batch must mix lengths and include a truncated example"
    assert max(len(b) for b in token_batches(lengths, 600)) > 1, "some batch must hold several examples"
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


def test_token_batches_respect_the_budget():
    lengths = [5, 30, 10, 10, 50, 12]
    batches = token_batches(lengths, 40)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [0, 2, 3]  # 5, 10, 10: three rows of at most 10 tokens = 30 <= 40
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 40
    assert [4] in batches, "an example over the budget gets a batch of its own"
    assert all(len(b) <= 2 for b in token_batches(lengths, 1000, max_rows=2))


def test_auto_device_and_dtype():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cuda") == "bfloat16" and resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float16", "cpu") == "float16"
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_bfloat16_features_agree_with_float32(tiny_lm, gsm8k_examples):
    examples = gsm8k_examples[:4]
    full = GradientFeaturizer(str(tiny_lm), proj_dim=512, max_length=160, device="cpu", dtype="float32")
    half = GradientFeaturizer(str(tiny_lm), proj_dim=512, max_length=160, device="cpu", dtype="bfloat16")
    assert next(half.model.base_model.model.parameters()).dtype == torch.bfloat16
    assert half.settings_key() != full.settings_key()
    cosines = np.sum(full.features(examples) * half.features(examples), axis=1)
    assert cosines.min() > 0.97, cosines


@pytest.mark.gpu
def test_cuda_bfloat16_features_agree_with_cpu(tiny_lm, gsm8k_examples):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    examples = gsm8k_examples[:4]
    cpu = GradientFeaturizer(str(tiny_lm), proj_dim=512, max_length=160, device="cpu")
    gpu = GradientFeaturizer(str(tiny_lm), proj_dim=512, max_length=160)  # auto: cuda, bfloat16
    assert gpu.device == "cuda" and gpu.dtype == "bfloat16"
    assert np.sum(cpu.features(examples) * gpu.features(examples), axis=1).min() > 0.97


def test_warmup_state_and_adam_features_match_hand_computation(tiny_lm, gsm8k_examples, tmp_path):
    (checkpoint,) = warmup_lora(
        str(tiny_lm),
        gsm8k_examples,
        tmp_path / "warm",
        epochs=1,
        batch_size=2,
        lr=1e-2,
        r=8,
        alpha=16,
        max_length=160,
        seed=0,
        device="cpu",
    )
    adapter = checkpoint.path
    # 7 examples in batches of 2 = 4 steps; linear schedule: warm-up 1 step, then decay over 3.
    assert checkpoint.step == 4 and checkpoint.mean_lr == pytest.approx(1e-2 * (0 + 1 + 2 / 3 + 1 / 3) / 4)
    state = torch.load(adapter / OPTIMIZER_STATE_FILE, weights_only=True)

    featurizer = GradientFeaturizer(str(tiny_lm), adapter, proj_dim=512, max_length=160, grad_type="adam")
    params = dict(featurizer.model.named_parameters())
    assert list(state) == featurizer.parameter_names
    for name in featurizer.parameter_names:
        assert state[name]["exp_avg"].shape == params[name].shape and int(state[name]["step"]) == 4
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
    featurizer = GradientFeaturizer(str(tiny_lm), adapter, proj_dim=512, max_length=160, grad_type="adam")
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
    with pytest.raises(ValueError, match="adapter_config.json: missing"):
        featurizer.use_checkpoint(tmp_path, "adam")
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
featurizer = HangsAfterFirstShardFeaturizer({model!r}, proj_dim=128, max_length=48, max_batch_tokens=64)
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
    featurizer = GradientFeaturizer(str(tiny_lm), proj_dim=128, max_length=48, max_batch_tokens=64)
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

    other = GradientFeaturizer(str(tiny_lm), proj_dim=128, proj_seed=1, max_length=48, max_batch_tokens=64)
    assert other.settings_key() != featurizer.settings_key()
    compute_feature_shards(other, examples, killed, shard_size=3)
    assert (killed / "shard-00000.npz").stat().st_mtime_ns != first.st_mtime_ns
    np.testing.assert_allclose(load_features(killed)[1], other.features(examples), atol=1e-6)


@pytest.mark.slow
def test_embedded_smollm2_gives_finite_unit_features(data_root):
    template = get_template("alpaca")
    rows = sorted(gsm8k_rows(data_root, 40), key=lambda r: len(r["question"] + r["answer"]))[:4]
    examples = [Example(f"g{i}", template.prompt(r["question"]), r["answer"]) for i, r in enumerate(rows)]
    featurizer = GradientFeaturizer("embedded", proj_dim=1024, max_length=128, max_batch_tokens=512)
    assert featurizer.gradient_dim == 921_600  # 30 layers x (A: 4 x 8 x 576, B: (576 + 192 + 192 + 576) x 8)
    vectors, norms = featurizer.features_with_norms(examples)
    assert vectors.shape == (4, 1024) and np.isfinite(vectors).all() and (norms > 0).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = vectors @ vectors.T
    assert (cosines[~np.eye(4, dtype=bool)] < 0.999).all(), "different examples must not give the same feature"
