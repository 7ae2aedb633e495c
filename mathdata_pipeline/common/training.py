"""What every fine-tuning stage shares (QFT, QPO, the evaluation's SFT): loading a model for
training, LoRA settings, Trainer arguments, and writing the result atomically as merged weights
(`hf/`), a GGUF for llama.cpp where exported, and `training.json`."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mathdata_pipeline.common.hf_models import EMBEDDED, load_causal_lm

TRAINING_JSON = "training.json"


HF_SUBDIR = "hf"


GGUF_NAME = "model.gguf"


DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class AdapterSettings:
    """What QFT and QPO share: LoRA (`use_lora`, rank `lora_r`, scale `lora_alpha`, dropout
    `lora_dropout`, on `target_modules`; `use_lora=False` trains all weights) and the GGUF export
    (`gguf_template`, `gguf_dtype`; see QftConfig)."""

    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    gguf_template: str = EMBEDDED
    gguf_dtype: str = "f16"


@dataclass
class TrainedModel:
    """A model trained by the pipeline as written to disk.

    `hf_dir`: merged weights and tokenizer (transformers / vLLM). `gguf_path`: the llama.cpp file, or
    None when the export was skipped. `steps`: optimizer steps run. `train_loss`: the loss logged at
    every step. `wall_seconds`: time of the whole call (loading, training, saving, export).
    `config`: the settings used plus `kind` ("qft"/"qpo"), `base` and `examples` (training rows).
    `eval_metrics`: final evaluation on the held-out pairs (QPO only; empty otherwise).
    """

    hf_dir: Path
    gguf_path: Path | None
    steps: int
    train_loss: list[float]
    wall_seconds: float
    config: dict
    eval_metrics: dict[str, float] = field(default_factory=dict)

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
        )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load_for_training(source: str, use_lora: bool):
    """(model, tokenizer) of `source`: float32 on a CPU; on CUDA bfloat16 base weights under LoRA,
    float32 weights (with bf16 autocast in training) for full fine-tuning."""
    dtype = "bfloat16" if cuda_available() and use_lora else "float32"
    model, tokenizer = load_causal_lm(source, dtype=dtype)
    if getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None:
        # A GGUF load is dequantized; load_causal_lm clears the quantizer but not this flag, and the
        # Trainer refuses a model flagged as quantized.
        model.is_quantized = False
    return model, tokenizer


def lora_config(config: AdapterSettings):
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
    per_device_batch, grad_accum, scheduler, seed): schedule, batch, seed, per-step loss logging,
    no checkpoints, no reporting, CPU unless CUDA is present (then bf16)."""
    cuda = cuda_available()
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
        use_cpu=not cuda,
        bf16=cuda,
        optim="adamw_torch",
    )


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
    """Merge LoRA, save `hf/`, export `model.gguf`, write `training.json`, move `work` to `out_dir`."""
    from mathdata_pipeline.common.gguf_export import export_gguf
    from mathdata_pipeline.engines.local import embedded_gguf_path

    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    hf_dir = work / HF_SUBDIR
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    shutil.rmtree(work / "trainer", ignore_errors=True)
    if config.gguf_template:
        template = embedded_gguf_path() if config.gguf_template == EMBEDDED else Path(config.gguf_template)
        export_gguf(hf_dir, template, work / GGUF_NAME, dtype=config.gguf_dtype)
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "kind": kind,
        "config": {"kind": kind, **asdict(config), **(extra or {}), "examples": examples},
        "steps": int(trainer.state.global_step),
        "train_loss": losses,
        "eval_metrics": eval_metrics,
        "gguf": bool(config.gguf_template),
    }
    record["wall_seconds"] = round(time.perf_counter() - started, 3)
    (work / TRAINING_JSON).write_text(json.dumps(record, indent=2))
    replace_dir(work, out_dir)
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
