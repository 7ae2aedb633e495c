"""CPU fine-tuning with and without gradient checkpointing: seconds per LoRA step of the embedded
model, the way `sft_model` trains (TRL SFTTrainer, `common_training_args`).

    .venv/bin/python benchmarks/cpu_training.py [--quick] [--steps N] [--rows R]

Rows: GSM8K train questions with their reference solutions as chat conversations (the first R),
tokenized as `evaluation.sft` tokenizes a mixture (chat template, `max_length` 256). Each variant
loads the model afresh, trains N steps (batch 4, seed 0) and is timed around `trainer.train()`:
`checkpointing` on (TRL's SFTConfig default, what the pipeline does) vs off. The training losses
of both runs are printed: the same numbers, since checkpointing recomputes the same activations.
Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.hf_models import EMBEDDED  # noqa: E402
from mathdata_pipeline.common.training import common_training_args, load_for_training, lora_config  # noqa: E402
from mathdata_pipeline.evaluation.conversations import training_examples  # noqa: E402
from mathdata_pipeline.evaluation.sft import SftSettings  # noqa: E402
from mathdata_pipeline.sources.config import data_dir, load_sources_config, open_source  # noqa: E402
from mathdata_pipeline.sources.problems import build_problems  # noqa: E402


def conversations(count: int) -> list[tuple[str, list[dict]]]:
    """The first `count` GSM8K train problems as (row id, chat messages)."""
    spec = load_sources_config().seed_sources["gsm8k"]
    label, records = open_source(spec, base=data_dir())
    table, _ = build_problems(records, spec, source="gsm8k", label=label)
    rows = table.slice(0, count).select(["problem_id", "question", "reference_solution"]).to_pylist()
    return [
        (r["problem_id"], [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": solution}])
        for r in rows
        if (solution := r["reference_solution"])
    ]


def train_steps(rows, settings: SftSettings, checkpointing: bool) -> tuple[float, list[float]]:
    """Seconds of `trainer.train()` for `settings.max_steps` steps, and the per-step losses."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_for_training(settings.base, settings.use_lora)
    examples, _ = training_examples(rows, tokenizer, settings.template, settings.max_length)
    dataset = Dataset.from_dict({"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]})
    with tempfile.TemporaryDirectory() as work:
        common = {**common_training_args(settings, Path(work)), "gradient_checkpointing": checkpointing}
        args = SFTConfig(max_length=settings.max_length, packing=False, **common)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(settings)
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    losses = [round(entry["loss"], 4) for entry in trainer.state.log_history if "loss" in entry]
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run (2 steps)")
    parser.add_argument("--steps", type=int, default=0, help="training steps per variant (default 6; quick 2)")
    parser.add_argument("--rows", type=int, default=32, help="conversations to train on")
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 6)
    settings = SftSettings(
        base=EMBEDDED, max_steps=steps, per_device_batch=4, grad_accum=1, max_length=256, learning_rate=5e-4
    )
    rows = conversations(args.rows)
    result = {"benchmark": "cpu_training", "steps": steps, "batch": 4, "max_length": 256}
    for name, checkpointing in (("checkpointing", True), ("no_checkpointing", False)):
        seconds, losses = train_steps(rows, settings, checkpointing)
        print(f"{name}: {seconds:.1f} s for {steps} steps ({seconds / steps:.2f} s/step), losses {losses}", flush=True)
        result[f"{name}_s_per_step"] = round(seconds / steps, 3)
        result[f"{name}_losses"] = losses
    result["speedup"] = round(result["checkpointing_s_per_step"] / result["no_checkpointing_s_per_step"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
