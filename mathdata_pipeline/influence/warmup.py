"""LESS's warm-up (METHODS.md §5.5 step 1): a short LoRA training run on a small random share of the
training data that saves a checkpoint, with its optimizer state, after every epoch.

- Optimizer: torch AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0) on the LoRA weights only;
  the HF/LESS linear schedule (linear warm-up over ceil(3% of the steps), then linear decay to
  zero; the first step runs at learning rate 0, as in the HF Trainer).
- A step takes the next `batch_size` examples of the epoch's seeded permutation and minimises the
  mean of their response losses, accumulated over micro-batches cut by a token budget (LESS: batch
  1 x gradient accumulation 32).
- Checkpoint `checkpoint-<epoch>`: the PEFT adapter, `optimizer_state.pt` = the Adam state KEYED BY
  PARAMETER NAME {name: {"exp_avg", "exp_avg_sq", "step"}} (LESS issues #4/#10), and
  `checkpoint.json` with the epoch, the global step, the epoch's mean learning rate (LESS weights
  the checkpoints by it) and the run's settings key. Each is written to a temporary folder and
  renamed into place, so a killed run resumes from its last finished epoch and gives the same
  checkpoints as an uninterrupted one (the permutation and dropout of epoch e are seeded by
  (seed, e)).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mathdata_pipeline.common.hf_models import load_causal_lm
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.influence.devices import resolve_device, resolve_dtype
from mathdata_pipeline.influence.gradient_features import (
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPS,
    OPTIMIZER_STATE_FILE,
    Example,
    attach_lora,
    encode_example,
    lora_parameter_names,
    pad_batch,
    response_losses,
    token_batches,
)

WARMUP_RATIO = 0.03  # LESS's linear schedule warm-up share
CHECKPOINT_INFO_FILE = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """One warm-up checkpoint: its folder, epoch (1-based), global step and mean learning rate."""

    path: Path
    epoch: int
    step: int
    mean_lr: float


def linear_schedule(step: int, steps: int, lr: float) -> float:
    """Learning rate of optimizer step `step` (0-based) of `steps`: linear warm-up over
    ceil(3% of steps), then linear decay to zero (the HF/LESS linear schedule)."""
    warm = math.ceil(WARMUP_RATIO * steps)
    if step < warm:
        return lr * step / warm
    return lr * max(0.0, (steps - step) / max(1, steps - warm))


def checkpoint_weights(checkpoints: Sequence[Checkpoint]) -> list[float]:
    """LESS's checkpoint weights: each checkpoint's mean learning rate over its epoch, renormalised
    to sum to 1 (equal weights when every mean is zero, e.g. a one-step run)."""
    rates = np.asarray([c.mean_lr for c in checkpoints], dtype=np.float64)
    if rates.sum() <= 0:
        return [1.0 / len(rates)] * len(rates)
    return (rates / rates.sum()).tolist()


def _settings_key(model_source: str, examples: Sequence[Example], settings: dict) -> str:
    parts = [e_part for e in examples for e_part in (e.example_id, e.prompt, e.response)]
    return stable_hash(str(model_source), json.dumps(settings, sort_keys=True), *parts)


def _finished_checkpoints(out_dir: Path, key: str, epochs: int) -> list[Checkpoint]:
    """The leading run of checkpoints 1, 2, ... already written with settings `key`."""
    done = []
    for epoch in range(1, epochs + 1):
        info_path = out_dir / f"checkpoint-{epoch}" / CHECKPOINT_INFO_FILE
        if not info_path.is_file():
            break
        info = json.loads(info_path.read_text())
        if info.get("settings_key") != key:
            break
        done.append(Checkpoint(info_path.parent, epoch, info["step"], info["mean_lr"]))
    return done


def _restore(model, optimizer, params: dict, names: Sequence[str], checkpoint: Path, device: str) -> None:
    """Load a checkpoint's LoRA weights and its name-keyed Adam state into `model` and `optimizer`."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
    state = torch.load(checkpoint / OPTIMIZER_STATE_FILE, map_location="cpu", weights_only=True)
    for name in names:
        optimizer.state[params[name]] = {
            "step": state[name]["step"].float(),
            "exp_avg": state[name]["exp_avg"].to(device),
            "exp_avg_sq": state[name]["exp_avg_sq"].to(device),
        }


def _save(model, optimizer, params: dict, names: Sequence[str], target: Path, info: dict) -> None:
    """Write one checkpoint into a temporary sibling of `target`, then rename it into place."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    state = {}
    for name in names:
        values = optimizer.state[params[name]].items()
        state[name] = {k: v.detach().cpu().clone() if torch.is_tensor(v) else torch.tensor(v) for k, v in values}
    torch.save(state, partial / OPTIMIZER_STATE_FILE)
    (partial / CHECKPOINT_INFO_FILE).write_text(json.dumps(info, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def warmup_lora(
    model_source: str,
    examples: Sequence[Example],
    out_dir: Path | str,
    *,
    epochs: int = 4,
    batch_size: int = 32,
    lr: float = 2e-5,
    r: int = 128,
    alpha: float = 512,
    dropout: float = 0.1,
    max_length: int = 2048,
    max_batch_tokens: int = 8192,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
) -> list[Checkpoint]:
    """LoRA warm-up of `model_source` on `examples` (see module doc); returns one checkpoint per
    epoch, in order. Parameters: LESS's values by default (4 epochs, lr 2e-5, r 128, alpha 512,
    dropout 0.1); `batch_size` examples per optimizer step; `max_batch_tokens` the micro-batch
    token budget (it does not change the result); `device`, `dtype` as in `devices.py`.
    Finished checkpoints of the same settings and examples in `out_dir` are reused.
    """
    if epochs < 1 or batch_size < 1 or not examples:
        raise ValueError("warmup_lora needs epochs >= 1, batch_size >= 1 and at least one example")
    out_dir = Path(out_dir)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, r=r, alpha=alpha, dropout=dropout)
    settings.update(max_length=max_length, seed=seed, dtype=dtype)
    key = _settings_key(model_source, examples, settings)
    done = _finished_checkpoints(out_dir, key, epochs)
    if len(done) == epochs:
        return done
    model, tokenizer = load_causal_lm(model_source, dtype=dtype)
    model = attach_lora(model, r=r, alpha=alpha, dropout=dropout, init_seed=seed).to(device)
    names = lora_parameter_names(model)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [params[n] for n in names], lr=lr, betas=(ADAM_BETA1, ADAM_BETA2), eps=ADAM_EPS, weight_decay=0.0
    )
    if done:
        _restore(model, optimizer, params, names, done[-1].path, device)
    encoded = [encode_example(tokenizer, example, max_length) for example in examples]
    per_epoch = math.ceil(len(encoded) / batch_size)
    model.train()
    for epoch in range(len(done), epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(encoded))
        rates = []
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
            torch.manual_seed(int(stable_hash("warmup-dropout", str(seed), str(epoch))[:8], 16))
            for j in range(per_epoch):
                step = epoch * per_epoch + j
                batch = [encoded[i] for i in order[j * batch_size : (j + 1) * batch_size]]
                rates.append(linear_schedule(step, epochs * per_epoch, lr))
                for group in optimizer.param_groups:
                    group["lr"] = rates[-1]
                optimizer.zero_grad(set_to_none=True)
                for rows in token_batches([len(ids) for ids, _ in batch], max_batch_tokens):
                    padded = pad_batch([batch[i] for i in rows], tokenizer.pad_token_id, device)
                    (response_losses(model, *padded).sum() / len(batch)).backward()
                optimizer.step()
        info = {"epoch": epoch + 1, "step": (epoch + 1) * per_epoch, "mean_lr": float(np.mean(rates))}
        target = out_dir / f"checkpoint-{epoch + 1}"
        _save(model, optimizer, params, names, target, {**info, "settings": settings, "settings_key": key})
        done.append(Checkpoint(target, info["epoch"], info["step"], info["mean_lr"]))
    model.eval()
    return done
