"""Supervised fine-tuning of a base model on a mixture's conversations (TRL `SFTTrainer`).

The loss covers the assistant turns only (`conversations`). LoRA adapters (merged afterwards) or
all weights. The result is written like every model the pipeline trains (`common.training`):
`hf/` (merged weights and tokenizer, for transformers and vLLM), `model.gguf` for the llama.cpp
engine where the architecture allows (llama: SmolLM2, Llama), and `training.json`.

- Resumable: the trainer writes a checkpoint every `checkpoint_steps` optimizer steps into a work
  folder beside the output, named by the run's fingerprint. A killed run started again with the
  same mixture and settings resumes from the last checkpoint (weights, optimizer, scheduler, data
  position and random state); anything else starts afresh.
- Reproducible: the fingerprint is a hash of the settings, the base model and the mixture rows. A
  model already written with the same fingerprint is reused instead of trained again; training
  itself is seeded (`seed`), so the same fingerprint gives the same weights (to float tolerance
  on a CPU).

Defaults follow DART-Math's recipe (METHODS.md §2.3): full fine-tuning, learning rate 5e-5, batch
64 (4 x 16 accumulation), cosine schedule with 3% warm-up, 4096 tokens, one epoch. Departures: no
sequence packing (so no two conversations share attention) and no DeepSpeed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mathdata_pipeline.common.devices import cuda_available
from mathdata_pipeline.common.hf_models import EMBEDDED, load_causal_lm
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.common.training import (
    GGUF_NAME,
    HF_SUBDIR,
    TRAINING_JSON,
    TrainedModel,
    TrainingSettings,
    common_training_args,
    finish_training,
    load_for_training,
    lora_config,
    replace_dir,
)
from mathdata_pipeline.evaluation.conversations import training_examples

FINGERPRINT_FILE = "fingerprint"
COUNT_KEYS = ("rows", "examples", "truncated", "dropped_no_assistant_tokens", "tokens", "loss_tokens")
GGUF_ARCHITECTURES = ("llama",)


@dataclass(frozen=True)
class SftSettings(TrainingSettings):
    """Fine-tuning settings (see the module doc for the defaults' source).

    `base`: "embedded", a transformers folder or a hub id. `template`: "chat" or "alpaca"
    (`conversations`). `max_steps` > 0 overrides `epochs`. `per_device_batch` x `grad_accum`
    conversations of at most `max_length` tokens per optimizer step. `checkpoint_steps`: steps
    between checkpoints (0 = none, so a killed run starts over). LoRA and GGUF fields: see
    `common.training.TrainingSettings`.
    """

    base: str = EMBEDDED
    template: str = "chat"
    epochs: float = 1.0
    max_steps: int = 0
    learning_rate: float = 5e-5
    per_device_batch: int = 4
    grad_accum: int = 16
    max_length: int = 4096
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    seed: int = 0
    checkpoint_steps: int = 50


@dataclass
class SftRun:
    """What `train_sft` did: the model on disk, whether it was `reused` (same fingerprint, no
    training), the step a killed run was `resumed_from` (0 = a fresh start) and the example counts."""

    model: TrainedModel
    reused: bool
    resumed_from: int
    counts: dict[str, int]


def mixture_digest(rows: Sequence[tuple[str, Sequence[dict]]]) -> str:
    """A hash of (row_id, messages) rows, in order: what the model is trained on."""
    parts = [row + "\x1e" + json.dumps(list(messages), sort_keys=True, ensure_ascii=False) for row, messages in rows]
    return stable_hash("mixture", *parts)


def fingerprint(settings: SftSettings, rows_digest: str) -> str:
    """The identity of a fine-tuning run: settings, base model and training rows."""
    return stable_hash("sft", json.dumps(asdict(settings), sort_keys=True), rows_digest)


def device_name() -> str:
    """The device training and scoring run on: the CUDA device's name, or "cpu (N threads)"."""
    import torch

    if cuda_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def train_sft(
    rows: Sequence[tuple[str, Sequence[dict]]],
    out_dir: str | Path,
    settings: SftSettings = SftSettings(),
    *,
    record: dict | None = None,
    callbacks: Sequence = (),
    log: Callable[[str], None] = print,
) -> SftRun:
    """Fine-tune `settings.base` on (row_id, messages) `rows` and write the model to `out_dir`.

    `record`: extra JSON-ready fields for `training.json` (e.g. the benchmarks checked for
    overlap); they do not change the fingerprint and are updated on a reused model. `callbacks`:
    extra transformers `TrainerCallback`s. Returns an SftRun. The config in `training.json` holds
    the settings plus `fingerprint`, `tokens_trained` (non-padding tokens the model saw),
    `loss_tokens` per epoch, `device`, `resumed_from` and the example counts. Raises ValueError
    naming a row without an assistant turn, or when no example is left to train on.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    key = fingerprint(settings, mixture_digest(rows))
    reused = _reuse(out_dir, key, record or {})
    if reused is not None:
        log(f"model with fingerprint {key} already in {out_dir}: reused")
        return SftRun(reused, True, 0, {k: reused.config.get(k, 0) for k in COUNT_KEYS})
    work = _work_folder(out_dir, key)
    model, tokenizer = load_for_training(settings.base, settings.use_lora, device=settings.device, dtype=settings.dtype)
    examples, counts = training_examples(rows, tokenizer, settings.template, settings.max_length)
    if not examples:
        raise ValueError(f"no training example left of {len(rows)} rows: {counts}")
    trainer = _trainer(model, tokenizer, examples, settings, work, callbacks)
    checkpoint = _last_checkpoint(work)
    resumed_from = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
    if checkpoint:
        log(f"resuming from {checkpoint.name}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    export = settings if _gguf_possible(model, settings) else replace(settings, gguf_template="")
    extra = {
        **(record or {}),
        **counts,
        "fingerprint": key,
        "tokens_trained": int(trainer.state.num_input_tokens_seen),
        "device": device_name(),
        "resumed_from": resumed_from,
        "gguf_skipped": "" if export.gguf_template else _gguf_skip_reason(model, settings),
    }
    trained = finish_training(trainer, tokenizer, "sft", export, len(examples), {}, out_dir, work, started, extra)
    return SftRun(trained, False, resumed_from, counts)


def export_reference(base: str, out_dir: str | Path, settings: TrainingSettings) -> TrainedModel:
    """The base model, untrained, in the layout of a trained one (`hf/`, `model.gguf` where the
    architecture allows, `training.json` with kind "base" and 0 steps), so the engines serve it
    exactly like a fine-tuned model (the same GGUF precision, `settings.gguf_dtype`). Written once
    per base and GGUF setting; a folder that already holds it is reused."""
    out_dir = Path(out_dir)
    key = stable_hash("base", base, settings.gguf_template, settings.gguf_dtype)
    if (out_dir / TRAINING_JSON).is_file() and TrainedModel.load(out_dir).config.get("fingerprint") == key:
        return TrainedModel.load(out_dir)
    started = time.perf_counter()
    work = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    model, tokenizer = load_causal_lm(base)
    model.save_pretrained(work / HF_SUBDIR)
    tokenizer.save_pretrained(work / HF_SUBDIR)
    gguf = bool(settings.gguf_template) and _gguf_possible(model, settings)
    if gguf:
        from mathdata_pipeline.common.gguf_export import export_gguf
        from mathdata_pipeline.engines.local import embedded_gguf_path

        template = embedded_gguf_path() if settings.gguf_template == EMBEDDED else Path(settings.gguf_template)
        export_gguf(work / HF_SUBDIR, template, work / GGUF_NAME, dtype=settings.gguf_dtype)
    record = {
        "kind": "base",
        "config": {"kind": "base", "base": base, "fingerprint": key, "examples": 0},
        "steps": 0,
        "train_loss": [],
        "eval_metrics": {},
        "gguf": gguf,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    (work / TRAINING_JSON).write_text(json.dumps(record, indent=2))
    replace_dir(work, out_dir)
    return TrainedModel.load(out_dir)


def _reuse(out_dir: Path, key: str, record: dict) -> TrainedModel | None:
    """The model in `out_dir` when it has fingerprint `key` (its record updated with `record`)."""
    path = out_dir / TRAINING_JSON
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data["config"].get("fingerprint") != key:
        return None
    if any(data["config"].get(k) != v for k, v in record.items()):
        data["config"].update(record)
        partial = path.with_name(f".{TRAINING_JSON}.tmp")
        partial.write_text(json.dumps(data, indent=2))
        os.replace(partial, path)
    return TrainedModel.load(out_dir)


def _work_folder(out_dir: Path, key: str) -> Path:
    """The run's work folder beside `out_dir`: kept (with its checkpoints) when it belongs to the
    same fingerprint, otherwise replaced by an empty one."""
    work = out_dir.with_name(f".{out_dir.name}.partial")
    marker = work / FINGERPRINT_FILE
    if work.exists() and not (marker.is_file() and marker.read_text() == key):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)
    return work


def _last_checkpoint(work: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder of the trainer in `work`, or None."""
    folder = work / "trainer"
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(folder))
    return Path(found) if found else None


def _trainer(model, tokenizer, examples, settings: SftSettings, work: Path, callbacks: Sequence):
    """The TRL SFTTrainer over pre-tokenized examples (labels given, so no re-masking)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_dict({"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]})
    saving = (
        {"save_strategy": "steps", "save_steps": settings.checkpoint_steps, "save_total_limit": 1}
        if settings.checkpoint_steps > 0
        else {}
    )
    args = SFTConfig(
        max_length=settings.max_length,
        packing=False,
        warmup_steps=settings.warmup_ratio,
        num_train_epochs=settings.epochs,
        include_num_input_tokens_seen="non_padding",
        **{**common_training_args(settings, work), **saving},
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(settings),
        callbacks=list(callbacks),
    )


def _gguf_possible(model, settings: TrainingSettings) -> bool:
    """Whether a GGUF can be exported: a template is set and the architecture is llama."""
    return bool(settings.gguf_template) and getattr(model.config, "model_type", "") in GGUF_ARCHITECTURES


def _gguf_skip_reason(model, settings: TrainingSettings) -> str:
    if not settings.gguf_template:
        return "no gguf_template set"
    return f"architecture {getattr(model.config, 'model_type', '?')!r} has no GGUF export (serve it with vllm)"
