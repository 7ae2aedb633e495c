"""What every fine-tuning stage shares (QFT, QPO, the evaluation's SFT): device and precision,
loading a model for training, LoRA settings, Trainer arguments, batches by a token budget, and
writing the result atomically as merged weights (`hf/`), a GGUF for llama.cpp where exported, and
`training.json`.

Precision (`training_precision`): on a CPU float32 (unless a dtype is named). On CUDA with
dtype "auto", LoRA loads the frozen base weights in bfloat16 (adapters stay float32) and full
fine-tuning keeps float32 master weights; both compute in bfloat16 autocast. An explicit
"bfloat16" loads every weight in bfloat16 (half the memory of full fine-tuning, at the cost of
rounding small updates away); "float16" uses float16 autocast with a loss scaler.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mathdata_pipeline.common.devices import resolve_device, resolve_dtype_name
from mathdata_pipeline.common.hf_models import EMBEDDED, load_causal_lm

TRAINING_JSON = "training.json"


HF_SUBDIR = "hf"


GGUF_NAME = "model.gguf"


DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainingSettings:
    """What every fine-tuning config shares.

    LoRA: `use_lora`, rank `lora_r`, scale `lora_alpha`, dropout `lora_dropout`, on
    `target_modules` (`use_lora=False` trains all weights). GGUF export for llama.cpp:
    `gguf_template` ("embedded" = the SmolLM2 file, a path to a GGUF of the same model, or "" for
    none; see `gguf_export.export_plan`), `gguf_dtype` "f16" or "f32". Placement: `device` and
    `dtype` (see `training_precision`). Batching: `batch_tokens`, the token budget of one device
    batch (rows x longest row, padding included; 0 = always `per_device_batch` rows); the
    config's `per_device_batch` caps the rows of a batch either way.
    """

    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    gguf_template: str = EMBEDDED
    gguf_dtype: str = "f16"
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = 0


@dataclass(frozen=True)
class TrainingPrecision:
    """Where and how a model trains: the resolved `device`, the dtype name its weights load in,
    and the Trainer's autocast (`mixed`: "bf16", "fp16" or None)."""

    device: str
    weights: str
    mixed: str | None


def training_precision(device: str = "auto", dtype: str = "auto", use_lora: bool = True) -> TrainingPrecision:
    """The precision rule of the module doc for `device` and `dtype` (names as in `common.devices`)."""
    device = resolve_device(device)
    if device == "cpu":
        return TrainingPrecision(device, "float32" if dtype == "auto" else resolve_dtype_name(dtype, device), None)
    name = resolve_dtype_name(dtype, device)
    mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(name)
    if dtype == "auto":
        return TrainingPrecision(device, "bfloat16" if use_lora else "float32", mixed)
    weights = "float32" if name == "float16" and not use_lora else name  # float16 master weights do not train
    return TrainingPrecision(device, weights, mixed)


def precision_of(config) -> TrainingPrecision:
    """`training_precision` of a config's `device`, `dtype` and `use_lora` ("auto", "auto", True
    for a config without them)."""
    return training_precision(
        getattr(config, "device", "auto"), getattr(config, "dtype", "auto"), getattr(config, "use_lora", True)
    )


@dataclass
class TrainedModel:
    """A model trained by the pipeline as written to disk.

    `hf_dir`: merged weights and tokenizer (transformers / vLLM). `gguf_path`: the llama.cpp file, or
    None when the export was skipped. `steps`: optimizer steps run. `train_loss`: the loss logged at
    every step. `wall_seconds`: time of the whole call (loading, training, saving, export).
    `config`: the settings used plus `kind` ("qft"/"qpo"), `base` and `examples` (training rows).
    `eval_metrics`: final evaluation on the held-out pairs (QPO only; empty otherwise).
    `gguf_note`: why no GGUF was written ("" when it was). `precision`: device, weight dtype and
    autocast the training ran with.
    """

    hf_dir: Path
    gguf_path: Path | None
    steps: int
    train_loss: list[float]
    wall_seconds: float
    config: dict
    eval_metrics: dict[str, float] = field(default_factory=dict)
    gguf_note: str = ""
    precision: dict = field(default_factory=dict)

    @classmethod
    def load(cls, out_dir: str | Path) -> TrainedModel:
        """Read a generator that `train_qft` or `train_qpo` wrote to `out_dir`."""
        out_dir = Path(out_dir)
        record = json.loads((out_dir / TRAINING_JSON).read_text())
        return cls(
            hf_dir=out_dir / HF_SUBDIR,
            gguf_path=out_dir / GGUF_NAME if record["gguf"] else None,
            steps=record["steps"],
            train_loss=record["train_loss"],
            wall_seconds=record["wall_seconds"],
            config=record["config"],
            eval_metrics=record["eval_metrics"],
            gguf_note=record.get("gguf_note", ""),
            precision=record.get("precision", {}),
        )


def load_for_training(source: str, use_lora: bool, *, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) of `source` (any `load_causal_lm` source) placed and typed for training
    by `training_precision(device, dtype, use_lora)`."""
    precision = training_precision(device, dtype, use_lora)
    model, tokenizer = load_causal_lm(source, device=precision.device, dtype=precision.weights)
    if getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None:
        # A GGUF load is dequantized; load_causal_lm clears the quantizer but not this flag, and the
        # Trainer refuses a model flagged as quantized.
        model.is_quantized = False
    return model, tokenizer


def lora_config(config: TrainingSettings):
    """PEFT LoraConfig for a causal LM, or None for full fine-tuning."""
    if not config.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )


def common_training_args(config, work: Path) -> dict:
    """TrainingArguments every fine-tuning stage shares (`config` has learning_rate, max_steps,
    per_device_batch, grad_accum, scheduler, seed, and the placement fields of TrainingSettings):
    schedule, batch, seed, per-step loss logging, no checkpoints, no reporting, the device and
    autocast of `precision_of(config)`."""
    precision = precision_of(config)
    return dict(
        output_dir=str(work / "trainer"),
        learning_rate=config.learning_rate,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        per_device_train_batch_size=config.per_device_batch,
        gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.scheduler,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=precision.device == "cpu",
        bf16=precision.mixed == "bf16",
        fp16=precision.mixed == "fp16",
        optim="adamw_torch",
    )


def row_tokens(row: dict, max_length: int) -> int:
    """Tokens one tokenized training row puts into a padded batch: a preference row
    (`prompt_ids`, `chosen_ids`, `rejected_ids`) is two sequences of prompt + the longer answer;
    any other row its `input_ids`; each sequence capped at `max_length`."""
    if "chosen_ids" in row:
        longer = max(len(row["chosen_ids"]), len(row["rejected_ids"]))
        return 2 * min(max_length, len(row["prompt_ids"]) + longer)
    return min(max_length, len(row["input_ids"]))


def batch_by_tokens(trainer, config) -> int:
    """Make `trainer` batch its training rows by `config.batch_tokens` (at most
    `config.per_device_batch` rows each; nothing changes when batch_tokens is 0 or absent).
    Call it after building the trainer (which tokenizes the rows) and before `train()`.
    Returns the number of batches per epoch (0 when unchanged)."""
    from mathdata_pipeline.common.token_sampler import TokenBudgetSampler

    budget = getattr(config, "batch_tokens", 0)
    if not budget:
        return 0
    max_length = trainer.args.max_length or 10**9
    lengths = [row_tokens(row, max_length) for row in trainer.train_dataset]
    sampler = TokenBudgetSampler(lengths, budget, config.per_device_batch, config.seed)
    trainer._get_train_sampler = lambda dataset=None: sampler
    return len(sampler)


def start_output(out_dir: str | Path) -> tuple[Path, Path]:
    """(out_dir, work): a fresh sibling work folder; a stale one from a crashed run is removed."""
    out_dir = Path(out_dir)
    work = out_dir.with_name(f".{out_dir.name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return out_dir, work


def finish_training(
    trainer,
    tokenizer,
    kind: str,
    config,
    examples: int,
    eval_metrics: dict,
    out_dir: Path,
    work: Path,
    started: float,
    extra: dict | None = None,
) -> TrainedModel:
    """Merge LoRA, save `hf/`, export `model.gguf` when `gguf_export.export_plan` allows it (the
    reason is recorded otherwise), write `training.json`, move `work` to `out_dir`, and drop the
    trainer's references to the model and optimizer. `config` is a TrainingSettings dataclass
    (its fields are recorded). The caller then drops its own references and calls
    `devices.release_cuda_memory()` so the next engine finds the GPU memory free."""
    from mathdata_pipeline.common.gguf_export import export_gguf, export_plan

    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    hf_dir = work / HF_SUBDIR
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    shutil.rmtree(work / "trainer", ignore_errors=True)
    template, gguf_note = export_plan(
        json.loads((hf_dir / "config.json").read_text()), getattr(config, "gguf_template", "")
    )
    if template is not None:
        export_gguf(hf_dir, template, work / GGUF_NAME, dtype=config.gguf_dtype)
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "kind": kind,
        "config": {"kind": kind, **asdict(config), **(extra or {}), "examples": examples},
        "steps": int(trainer.state.global_step),
        "train_loss": losses,
        "eval_metrics": eval_metrics,
        "gguf": template is not None,
        "gguf_note": gguf_note,
        "precision": asdict(precision_of(config)),
    }
    record["wall_seconds"] = round(time.perf_counter() - started, 3)
    (work / TRAINING_JSON).write_text(json.dumps(record, indent=2))
    replace_dir(work, out_dir)
    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    return TrainedModel.load(out_dir)


def replace_dir(work: Path, out_dir: Path) -> None:
    """Rename `work` to `out_dir`; an existing `out_dir` is moved aside first and then deleted."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    shutil.rmtree(old, ignore_errors=True)
