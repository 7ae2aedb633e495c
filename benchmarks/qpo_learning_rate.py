"""Do a few QPO (DPO) steps move the model? LoRA and full fine-tuning at their learning rates.

    .venv/bin/python benchmarks/qpo_learning_rate.py [--quick] [--steps 8] [--pairs 16]

Pairs: the first N GSM8K train questions as "chosen" and their first sentence alone (a fragment
that asks nothing answerable) as "rejected", behind the embedded SmolLM2's question prefix. Each
setting trains `train_qpo` from the embedded SmolLM2-135M (fp32, CPU) for the same steps (batch 2,
no warm-up, constant schedule) and reports:

- margin shift: the mean over pairs of [log p(chosen) - log p(rejected)] after training minus
  before (nats; what DPO pushes up),
- weight change: the largest relative change |W' - W| / |W| over the q/k/v/o projections.

Settings: LoRA at 5e-7 (the old behaviour: LoRA at the paper's full fine-tuning rate) is the
baseline; LoRA at 5e-6 (the alignment-handbook's LoRA DPO rate), LoRA at 2.5e-5 (the LoRA default
of `QpoConfig`) and full fine-tuning at 5e-7 (the paper's) are compared with it. `ratio` is the
default's margin shift over the baseline's, `lora_vs_full` the default's over full fine-tuning's.
The last line of stdout is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.hf_models import chat_template, load_causal_lm  # noqa: E402
from mathdata_pipeline.scalequest.prefix import resolve_prefix  # noqa: E402
from mathdata_pipeline.scalequest.training import QpoConfig, train_qpo  # noqa: E402
from mathdata_pipeline.sources.config import data_dir  # noqa: E402

SETTINGS = (
    ("lora@5e-7", True, 5e-7),
    ("lora@5e-6", True, 5e-6),
    ("lora@2.5e-5", True, 2.5e-5),
    ("full@5e-7", False, 5e-7),
)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def preference_pairs(n: int) -> list[tuple[str, str]]:
    """(whole question, its first sentence) for the first `n` GSM8K train questions with two or more sentences."""
    pairs = []
    with gzip.open(data_dir() / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            question = json.loads(line)["question"].strip()
            first = re.split(r"(?<=[.?!])\s+", question)[0]
            if first != question:
                pairs.append((question, first))
            if len(pairs) == n:
                return pairs
    return pairs


def margin(model, tokenizer, prefix: str, end: str, pairs) -> float:
    """Mean over pairs of log p(chosen + end | prefix) - log p(rejected + end | prefix)."""
    prompt = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    values = []
    with torch.no_grad():
        for chosen, rejected in pairs:
            logps = []
            for text in (chosen, rejected):
                ids = prompt + tokenizer(text + end, add_special_tokens=False)["input_ids"]
                logits = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
                targets = torch.tensor(ids[1:])
                logps.append(float(logits[torch.arange(len(targets)), targets][len(prompt) - 1 :].sum()))
            values.append(logps[0] - logps[1])
    return sum(values) / len(values)


def projection_weights(model) -> dict[str, torch.Tensor]:
    """The q/k/v/o projection weights of `model`, copied."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if any(k in n for k in PROJECTIONS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 steps on 8 pairs")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=16)
    args = parser.parse_args()
    steps, n = (4, 8) if args.quick else (args.steps, args.pairs)
    torch.set_num_threads(2)
    prefix = resolve_prefix("auto", chat_template("embedded"))
    pairs = preference_pairs(n)
    base, tokenizer = load_causal_lm("embedded", device="cpu")
    before_margin, before_weights = (
        margin(base, tokenizer, prefix.prefix, prefix.end_of_turn, pairs),
        projection_weights(base),
    )
    rows = {}
    for label, use_lora, rate in SETTINGS:
        started = time.perf_counter()
        config = QpoConfig(
            use_lora=use_lora,
            learning_rate=rate,
            max_steps=steps,
            per_device_batch=2,
            grad_accum=1,
            warmup_steps=0,
            scheduler="constant",
            eval_pairs=0,
            gguf_template="",
            device="cpu",
        )
        with tempfile.TemporaryDirectory() as tmp:
            trained = train_qpo(pairs, prefix.prefix, prefix.end_of_turn, "embedded", Path(tmp) / "qpo", config)
            model, _ = load_causal_lm(str(trained.hf_dir), device="cpu")
        after = projection_weights(model)
        change = max(float((after[k] - w).norm() / w.norm()) for k, w in before_weights.items())
        shift = margin(model, tokenizer, prefix.prefix, prefix.end_of_turn, pairs) - before_margin
        rows[label] = {
            "margin_shift": round(shift, 4),
            "max_relative_weight_change": float(f"{change:.3g}"),
            "final_loss": round(trained.train_loss[-1], 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{label:22s} margin shift {shift:+.4f} nats  max relative weight change {change:.3g}  "
            f"loss {trained.train_loss[0]:.4f} -> {trained.train_loss[-1]:.4f}",
            flush=True,
        )
    baseline = rows["lora@5e-7"]["margin_shift"]
    default = rows["lora@2.5e-5"]["margin_shift"]
    print(
        json.dumps(
            {
                "benchmark": "qpo_learning_rate",
                "ratio": round(default / baseline, 2) if baseline else None,
                "lora_vs_full": round(default / rows["full@5e-7"]["margin_shift"], 3),
                "steps": steps,
                "pairs": len(pairs),
                "margin_before": round(before_margin, 4),
                **rows,
            }
        )
    )


if __name__ == "__main__":
    main()
