"""LESS-style gradient features of (prompt, response) examples (METHODS.md §5.5, §6.5).

For each example the feature is the gradient of its loss with respect to the LoRA adapter weights
(q/k/v/o projections), Adam-preconditioned with the moments of a warm-up checkpoint (LESS's
training features; `warmup.py`) or plain (validation features, or no warm-up), randomly
projected to `proj_dim` dimensions and normalised to unit length. Inner products of these
features are the influence estimates of `scores.py`; `datastore.py` runs this per checkpoint.

- Loss: mean token cross-entropy over the RESPONSE tokens only (prompt tokens labelled -100), of
  prompt tokens + response tokens + EOS, truncated on the right to `max_length` tokens. The
  prompt is the question rendered with the template the validation responses were sampled with
  (`examples.render_prompt`).
- LoRA B matrices start at zero, so with a fresh adapter (no warm-up) the gradients of the A
  matrices are exactly zero and the features come from the B gradients only; after a warm-up
  both are non-zero.
- Per-example gradients are computed for a whole padded batch with one forward and one backward
  pass: forward hooks keep each LoRA layer's input x and low-rank activation u = A x, autograd
  gives the loss gradients at u and at B u, and the per-example weight gradients are the
  per-example sums over tokens of their outer products (right padding, so padded positions get a
  zero gradient and the real tokens see exactly what they would see alone). Batches are cut by a
  token budget (rows x longest row), not a fixed row count.
- Device and precision: `devices.py` ("auto": CUDA + bfloat16 base weights when a GPU is
  present, CPU + float32 otherwise); the LoRA weights, their gradients and the projection stay
  float32.
- Projection (`SparseSignProjection`): a dense 8192 x 1M Rademacher matrix would hold 8G entries,
  so the projection is a sparse JL transform instead: each input coordinate gets one random
  +-1/sqrt(s) entry in each of s equal row blocks (s = 4 by default), drawn once from a seeded
  PCG64 generator and kept as a sparse CSR matrix (for D = 0.9M and s = 4: 3.7M entries, about
  30 MB). Each output row is a fixed sum, so results are the same in every process and for every
  batch size, and inner products are preserved in expectation with variance about
  (|x|^2 |y|^2 + <x, y>^2) / proj_dim, the same as a dense Rademacher matrix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mathdata_pipeline.common.hf_models import EMBEDDED, load_causal_lm
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.influence.devices import resolve_device, resolve_dtype

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
ADAPTER_NAME = "default"
OPTIMIZER_STATE_FILE = "optimizer_state.pt"
MANIFEST_FILE = "manifest.json"
IGNORE_INDEX = -100
GRADIENT_BUFFER_BYTES = 1 << 30  # per-example gradients of one batch (float32) stay under 1 GiB


@dataclass(frozen=True)
class Example:
    """One training or validation example: the prompt (already formatted with its template) and
    the response whose tokens carry the loss."""

    example_id: str
    prompt: str
    response: str


def encode_example(tokenizer, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of `example`: prompt ids + response ids + EOS, cut to `max_length`;
    labels copy the response ids and hold -100 on the prompt.

    Raises ValueError naming the example and field when the prompt or response is empty or not a
    string, or when the prompt alone fills `max_length` (no response token would carry loss).
    """
    for field in ("prompt", "response"):
        value = getattr(example, field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"example {example.example_id!r}: field '{field}' must be a non-empty string")
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(example.response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        raise ValueError(
            f"example {example.example_id!r}: field 'prompt' has {len(prompt_ids)} tokens, "
            f"which leaves no response token within max_length={max_length}"
        )
    ids = (prompt_ids + response_ids)[:max_length]
    labels = [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]
    return ids, labels


def token_batches(lengths: Sequence[int], max_tokens: int, max_rows: int = 0) -> list[list[int]]:
    """Indices of `lengths` grouped into batches, shortest first (ties by index): a batch grows
    while rows x its longest length stays within `max_tokens` and (when `max_rows` > 0) its rows
    within `max_rows`; an example longer than the budget forms a batch of its own."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        current = batches[-1] if batches else None
        if current and (len(current) + 1) * lengths[i] <= max_tokens and not (max_rows and len(current) >= max_rows):
            current.append(i)
        else:
            batches.append([i])
    return batches


def pad_batch(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str = "cpu"):
    """Right-pad encoded examples into (input_ids, attention_mask, labels) tensors of shape (B, T)."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device), labels.to(device)


def response_losses(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean next-token cross-entropy over the labelled (response) tokens, shape (B,)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return token_loss.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1)


class SparseSignProjection:
    """Seeded sparse JL projection from `input_dim` to `output_dim` (see module doc).

    Parameters: `seed` and the dimensions fix the matrix completely; `nonzeros` (s) entries of
    +-1/sqrt(s) per input coordinate, one in each of s row blocks (output_dim must be a multiple
    of s). `project(vectors)` maps an (n, input_dim) tensor to (n, output_dim) float32.
    """

    def __init__(self, input_dim: int, output_dim: int, *, seed: int = 0, nonzeros: int = 4, device: str = "cpu"):
        if output_dim % nonzeros:
            raise ValueError(f"proj_dim={output_dim} must be a multiple of the projection's nonzeros={nonzeros}")
        self.input_dim, self.output_dim, self.seed, self.nonzeros = input_dim, output_dim, seed, nonzeros
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, input_dim, output_dim, nonzeros])))
        block = output_dim // nonzeros
        rows = rng.integers(0, block, size=(input_dim, nonzeros), dtype=np.int64) + block * np.arange(nonzeros)
        signs = rng.integers(0, 2, size=(input_dim, nonzeros), dtype=np.int8).astype(np.float32) * 2 - 1
        rows, order = rows.reshape(-1), np.argsort(rows.reshape(-1), kind="stable")  # CSR: by row, then column
        crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=output_dim))])
        cols = np.repeat(np.arange(input_dim, dtype=np.int64), nonzeros)[order]
        values = signs.reshape(-1)[order] / np.float32(math.sqrt(nonzeros))
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = torch.sparse_csr_tensor(
                torch.from_numpy(crow),
                torch.from_numpy(cols),
                torch.from_numpy(values),
                (output_dim, input_dim),
                check_invariants=False,
            ).to(device)

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """(n, input_dim) -> (n, output_dim), float32, on the projection's device."""
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"expected vectors of shape (n, {self.input_dim}), got {tuple(vectors.shape)}")
        dense = vectors.to(device=self.matrix.device, dtype=torch.float32).T.contiguous()
        return (self.matrix @ dense).T.contiguous()


def lora_layers(model) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(module name, lora_A, lora_B) of every LoRA Linear layer in module order; the flattened
    gradient holds, per layer, A's weight gradient then B's."""
    layers = []
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and ADAPTER_NAME in lora_a:
            layers.append((name, lora_a[ADAPTER_NAME], lora_b[ADAPTER_NAME]))
    return layers


def lora_parameter_names(model) -> list[str]:
    """Names (as in `model.named_parameters()`) of the LoRA weights, in flattening order."""
    return [f"{name}.lora_{part}.{ADAPTER_NAME}.weight" for name, _, _ in lora_layers(model) for part in ("A", "B")]


def attach_lora(model, *, r: int, alpha: float, dropout: float, init_seed: int):
    """Wrap `model` in a fresh PEFT LoRA adapter on q/k/v/o; A is drawn from torch's generator
    seeded with `init_seed` (B starts at zero). Only the LoRA weights require gradients."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return get_peft_model(model, config, adapter_name=ADAPTER_NAME)


def per_example_lora_gradients(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Gradient of each example's response loss w.r.t. all LoRA weights, shape (B, D), flattened in
    `lora_parameter_names` order, from one batched forward and backward pass (see module doc)."""
    layers = lora_layers(model)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(module, inputs, output):
        captured[id(module)] = (inputs[0], output)

    handles = [m.register_forward_hook(keep) for _, a, b in layers for m in (a, b)]
    try:
        with torch.enable_grad():
            total = response_losses(model, input_ids, attention_mask, labels).sum()
            outputs = [captured[id(m)][1] for _, a, b in layers for m in (a, b)]
            grads = torch.autograd.grad(total, outputs)
    finally:
        for handle in handles:
            handle.remove()
    pieces = []
    for index, (_, lora_a, _lora_b) in enumerate(layers):
        x, u = captured[id(lora_a)]
        grad_u, grad_w = grads[2 * index], grads[2 * index + 1]
        pieces.append(torch.bmm(grad_u.transpose(1, 2), x).flatten(1))  # dL/dA per example: (r, in)
        pieces.append(torch.bmm(grad_w.transpose(1, 2), u).flatten(1))  # dL/dB per example: (out, r)
    return torch.cat(pieces, dim=1).detach()


def adam_precondition(grads: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> torch.Tensor:
    """LESS's Adam feature of gradients (B, D) given the warm-up moments (D,):
    m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, result m' / sqrt(v' + eps) (eps inside the
    root, no bias correction, as LESS's code), with b1 0.9, b2 0.999, eps 1e-8."""
    m = ADAM_BETA1 * exp_avg + (1 - ADAM_BETA1) * grads
    v = ADAM_BETA2 * exp_avg_sq + (1 - ADAM_BETA2) * grads.square()
    return m / torch.sqrt(v + ADAM_EPS)


def load_adam_moments(adapter_dir: Path, parameter_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (exp_avg, exp_avg_sq) of the name-keyed Adam state in `adapter_dir`, in the order
    of `parameter_names`. Raises ValueError when the file or a parameter's state is missing."""
    path = Path(adapter_dir) / OPTIMIZER_STATE_FILE
    if not path.is_file():
        raise ValueError(f"grad_type 'adam' needs the warm-up optimizer state {path} (run warmup_lora first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [name for name in parameter_names if name not in state]
    if missing:
        raise ValueError(f"{path}: no Adam state for {len(missing)} LoRA parameters, e.g. {missing[0]!r}")
    return (
        torch.cat([state[name]["exp_avg"].reshape(-1).float() for name in parameter_names]),
        torch.cat([state[name]["exp_avg_sq"].reshape(-1).float() for name in parameter_names]),
    )


def _adapter_fingerprint(adapter_dir: Path | None) -> str:
    """sha256 over the adapter folder's files (names and bytes), or "none"."""
    if adapter_dir is None:
        return "none"
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(adapter_dir).iterdir() if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_adapter_config(adapter_dir: Path | str) -> dict:
    """`adapter_config.json` of a warm-up checkpoint; ValueError when missing or not a q/k/v/o LoRA."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing (not a LoRA checkpoint written by warmup_lora)")
    config = json.loads(path.read_text())
    if set(config.get("target_modules") or ()) != set(LORA_TARGETS):
        raise ValueError(f"{path}: target_modules {config.get('target_modules')} are not {list(LORA_TARGETS)}")
    return config


class GradientFeaturizer:
    """Unit-length projected LoRA gradient features of examples (see module doc).

    Parameters: `model_source` for `load_causal_lm` ("embedded" = SmolLM2); `adapter_dir` a
    warm-up checkpoint (None: a fresh adapter with A seeded by `init_seed`, B = 0); `r`, `alpha`
    the adapter's rank and scale (default 8, 16 for a fresh adapter; with a checkpoint, None takes
    its values and a different value is an error); `proj_dim`, `proj_seed`, `proj_nonzeros` the
    projection; `max_length` tokens per example; `grad_type` "sgd" (plain gradients: validation
    examples, or no warm-up state) or "adam" (LESS preconditioning with the checkpoint's Adam
    moments); `max_batch_tokens` the token budget of one forward/backward pass (examples sorted
    by length; rows also capped so their gradients fit GRADIENT_BUFFER_BYTES); `device`, `dtype`
    as in `devices.py`. LoRA dropout is off while scoring (the model stays in eval mode).
    `use_checkpoint` switches to another checkpoint of the same run without reloading the model.
    """

    def __init__(
        self,
        model_source: str = EMBEDDED,
        adapter_dir: Path | str | None = None,
        *,
        r: int | None = None,
        alpha: float | None = None,
        proj_dim: int = 8192,
        proj_seed: int = 0,
        proj_nonzeros: int = 4,
        max_length: int = 2048,
        grad_type: str = "sgd",
        max_batch_tokens: int = 4096,
        init_seed: int = 0,
        device: str = "auto",
        dtype: str = "auto",
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if adapter_dir is not None:
            config = read_adapter_config(adapter_dir)
            for label, wanted, stored in (("r", r, config["r"]), ("alpha", alpha, config["lora_alpha"])):
                if wanted is not None and wanted != stored:
                    raise ValueError(f"{adapter_dir}: adapter has {label}={stored}, but {label}={wanted} was asked")
            r, alpha = config["r"], config["lora_alpha"]
        self.model_source, self.max_batch_tokens = str(model_source), max_batch_tokens
        self.max_length, self.proj_seed, self.init_seed = max_length, proj_seed, init_seed
        self.r, self.alpha = r or 8, alpha or 16
        base, self.tokenizer = load_causal_lm(model_source, dtype=self.dtype)
        self.model = attach_lora(base, r=self.r, alpha=self.alpha, dropout=0.0, init_seed=init_seed)
        self.model.to(self.device).eval()
        self.parameter_names = lora_parameter_names(self.model)
        trainable = set(self.parameter_names)
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in trainable)
        self.gradient_dim = sum(p.numel() for n, p in self.model.named_parameters() if p.requires_grad)
        self.projection = SparseSignProjection(
            self.gradient_dim, proj_dim, seed=proj_seed, nonzeros=proj_nonzeros, device=self.device
        )
        self.adapter_dir, self.grad_type, self.moments = None, "sgd", None
        self.use_checkpoint(adapter_dir, grad_type)

    def use_checkpoint(self, adapter_dir: Path | str | None, grad_type: str = "sgd") -> None:
        """Load the LoRA weights of checkpoint `adapter_dir` (None keeps the current weights) and,
        for grad_type "adam", its Adam moments. Raises ValueError for an unknown grad_type, for
        "adam" without a checkpoint, or for a checkpoint of another rank or scale."""
        if grad_type not in ("sgd", "adam"):
            raise ValueError(f"grad_type must be 'sgd' or 'adam', got {grad_type!r}")
        if adapter_dir is not None:
            from peft.utils import set_peft_model_state_dict
            from safetensors.torch import load_file

            adapter_dir = Path(adapter_dir)
            config = read_adapter_config(adapter_dir)
            if (config["r"], config["lora_alpha"]) != (self.r, self.alpha):
                raise ValueError(
                    f"{adapter_dir}: adapter has r={config['r']}, alpha={config['lora_alpha']}, "
                    f"the featurizer r={self.r}, alpha={self.alpha}"
                )
            weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(self.model, weights, adapter_name=ADAPTER_NAME)
            missing = [k for k in result.missing_keys if "lora_" in k]
            if missing:
                raise ValueError(f"{adapter_dir}: {len(missing)} LoRA tensors missing, e.g. {missing[0]!r}")
            self.adapter_dir = adapter_dir
        if grad_type == "adam" and self.adapter_dir is None:
            raise ValueError("grad_type 'adam' needs adapter_dir with a warm-up optimizer state")
        self.grad_type = grad_type
        self.moments = None
        if grad_type == "adam":
            self.moments = tuple(t.to(self.device) for t in load_adam_moments(self.adapter_dir, self.parameter_names))

    def settings_key(self) -> str:
        """Hash of every setting that changes the features (model source, dtype, adapter content,
        LoRA, projection, max_length, grad_type, init seed); batching and device are left out."""
        settings = {
            "model_source": self.model_source,
            "dtype": self.dtype,
            "adapter": _adapter_fingerprint(self.adapter_dir),
            "r": self.r,
            "alpha": self.alpha,
            "proj_dim": self.projection.output_dim,
            "proj_seed": self.proj_seed,
            "proj_nonzeros": self.projection.nonzeros,
            "max_length": self.max_length,
            "grad_type": self.grad_type,
            "init_seed": self.init_seed,
        }
        return stable_hash(json.dumps(settings, sort_keys=True))

    def features_with_norms(self, examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
        """(features, norms): unit-L2 projected features (n, proj_dim) float32 in input order, and
        the L2 norms of the projected vectors before normalisation (n,) (LESS's unnormalised copy).

        Examples are sorted by token length and cut into batches by `max_batch_tokens`; each
        batch's gradients (Adam-preconditioned for grad_type "adam") are projected at once. A zero
        gradient gives a zero feature and norm 0.
        """
        encoded = [encode_example(self.tokenizer, example, self.max_length) for example in examples]
        vectors = torch.zeros((len(encoded), self.projection.output_dim), dtype=torch.float32)
        norms = torch.zeros(len(encoded), dtype=torch.float32)
        max_rows = max(1, GRADIENT_BUFFER_BYTES // (4 * self.gradient_dim))
        for rows in token_batches([len(ids) for ids, _ in encoded], self.max_batch_tokens, max_rows):
            batch = pad_batch([encoded[i] for i in rows], self.tokenizer.pad_token_id, self.device)
            grads = per_example_lora_gradients(self.model, *batch).float()
            if self.moments is not None:
                grads = adam_precondition(grads, *self.moments)
            projected = self.projection.project(grads)
            norm = projected.norm(dim=1)
            vectors[rows] = (projected / norm.clamp_min(torch.finfo(torch.float32).tiny)[:, None]).cpu()
            norms[rows] = norm.cpu()
        return vectors.numpy(), norms.numpy()

    def features(self, examples: Sequence[Example]) -> np.ndarray:
        """Unit-L2 projected gradient features, shape (n, proj_dim), float32, in input order."""
        return self.features_with_norms(examples)[0]


def _examples_key(examples: Sequence[Example]) -> str:
    return stable_hash(*(part for e in examples for part in (e.example_id, e.prompt, e.response)))


def write_atomically(path: Path, write) -> None:
    """Call write(file) on a temporary file beside `path`, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _shard_is_current(path: Path, settings: str, examples_key: str) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as shard:
            return str(shard["settings_key"]) == settings and str(shard["examples_key"]) == examples_key
    except (OSError, ValueError, KeyError):
        return False


def compute_feature_shards(
    featurizer: GradientFeaturizer, examples: Sequence[Example], out_dir: Path | str, shard_size: int = 16
) -> list[Path]:
    """Features of `examples` in resumable shards; returns the shard paths in order.

    `featurizer` is a `GradientFeaturizer` (chunks computed here, in order) or a
    `ray_features.RayFeaturizer` (chunks computed by Ray workers; each shard is written here as
    its chunk comes back, so a lost worker costs only the shard it held).

    Shard i (`out_dir/shard-0000i.npz`: ids, features, norms, settings_key, examples_key) holds
    examples[i*shard_size:(i+1)*shard_size] and is written atomically (temporary file + rename).
    A rerun recomputes only shards that are missing or whose featurizer settings or examples
    changed; `manifest.json` lists the shards of the current run for `load_features`.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ids = [e.example_id for e in examples]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate example_id {duplicate!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = featurizer.settings_key()
    chunks = [examples[i : i + shard_size] for i in range(0, len(examples), shard_size)]
    paths = [out_dir / f"shard-{i:05d}.npz" for i in range(len(chunks))]
    manifest = {
        "settings_key": settings,
        "shard_size": shard_size,
        "n_examples": len(examples),
        "shards": [p.name for p in paths],
    }
    write_atomically(out_dir / MANIFEST_FILE, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    keys = [_examples_key(chunk) for chunk in chunks]
    todo = [(i, chunk) for i, chunk in enumerate(chunks) if not _shard_is_current(paths[i], settings, keys[i])]
    for i, (vectors, norms) in _chunk_features(featurizer, todo):
        arrays = {
            "ids": np.array([e.example_id for e in chunks[i]]),
            "features": vectors,
            "norms": norms,
            "settings_key": np.array(settings),
            "examples_key": np.array(keys[i]),
        }
        write_atomically(paths[i], lambda f, arrays=arrays: np.savez(f, **arrays))
    return paths


def _chunk_features(featurizer, todo: list[tuple[int, Sequence[Example]]]):
    """(index, (features, norms)) of each chunk: from the featurizer's workers in completion order
    when it has them (`ray_features.RayFeaturizer`), else computed here one chunk after another."""
    if hasattr(featurizer, "features_in_chunks"):
        return featurizer.features_in_chunks(todo)
    return ((i, featurizer.features_with_norms(chunk)) for i, chunk in todo)


def load_features(out_dir: Path | str) -> tuple[list[str], np.ndarray]:
    """(ids, features matrix) of the shards listed in `out_dir/manifest.json`, in order.

    Raises ValueError when a listed shard is missing (an unfinished run) or was computed with
    other settings than the manifest's.
    """
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    ids: list[str] = []
    blocks = []
    for name in manifest["shards"]:
        path = out_dir / name
        if not path.is_file():
            raise ValueError(f"{path}: shard missing; rerun compute_feature_shards to finish the run")
        with np.load(path) as shard:
            if str(shard["settings_key"]) != manifest["settings_key"]:
                raise ValueError(f"{path}: computed with other featurizer settings than {out_dir / MANIFEST_FILE}")
            ids.extend(str(i) for i in shard["ids"])
            blocks.append(shard["features"])
    return ids, (np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32))
