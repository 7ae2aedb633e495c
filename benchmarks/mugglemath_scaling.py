"""MuggleMath's central experiment at CPU scale: how a fine-tuned model's score moves with the amount
of augmented data (the paper: GSM8K accuracy grows log-linearly with the number of augmented queries).

    .venv/bin/python benchmarks/mugglemath_scaling.py [--quick] [--seeds 6] [--sizes 0,4,8,16,32]
        [--eval-items 32] [--data FILE.jsonl] [--ledger-dir DIR]

Data: augmented (question, response) pairs made by the pipeline's own MuggleMath functions with the
embedded SmolLM2-135M-Instruct: GSM8K train seeds, all five rewrite types (`rewrite_jobs`, parsed and
deduplicated by `new_problems`), one sampled response (400 tokens) per new question, kept by `vote_columns`
(answer extracted, not cut off, calculator annotations valid). `--data` takes a JSONL of
{"query", "response"} instead (e.g. the released AugGSM8K, or `solutions` rows of a GPU run).
Requests go through a request ledger, so a rerun with the same `--ledger-dir` generates nothing.

Sweep: for every size N on the grid, LoRA fine-tuning of the embedded model on the first N pairs
(nested subsets, one epoch, the same seed and steps per example; N = 0 is the base model, the
baseline), Alpaca format, loss on the response only. Measure: the mean log-probability per token of
the reference solutions of GSM8K test items under the Alpaca prompt of their question, higher is
better. This is the log-probability measure of the evaluation stage (mathdata_pipeline/evaluation/,
built in another branch and not importable here), computed with common/hf_models directly. Then
`score = a + b * ln(N)` is fit over N > 0.

What it is on 2 CPU cores: a 135M model, a few dozen augmented rows written by that same model (few
of its answers are right), seconds of training per size. It shows the sweep runs end to end and
what it reports; it says nothing about the paper's 7B-70B results, which need a GPU and a strong
augmenting model (configs/mugglemath-paper.yaml). The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.hf_models import load_causal_lm  # noqa: E402
from mathdata_pipeline.common.samples import SampleSpec, draw_samples  # noqa: E402
from mathdata_pipeline.common.subsets import solver_subset  # noqa: E402
from mathdata_pipeline.common.templates import get_template  # noqa: E402
from mathdata_pipeline.engines.base import SamplingParams  # noqa: E402
from mathdata_pipeline.engines.resources import LLMResource  # noqa: E402
from mathdata_pipeline.grading import Grader  # noqa: E402
from mathdata_pipeline.mugglemath.prompts import REWRITE_TYPES  # noqa: E402
from mathdata_pipeline.mugglemath.responses import vote_columns  # noqa: E402
from mathdata_pipeline.mugglemath.rewrites import new_problems, rewrite_jobs  # noqa: E402
from mathdata_pipeline.sources.config import data_dir, load_sources_config, open_source  # noqa: E402
from mathdata_pipeline.sources.problems import build_problems  # noqa: E402

ALPACA = get_template("alpaca")


def gsm8k(split: str) -> list[dict]:
    """GSM8K rows as problem dicts: the train seeds (`seed_sources`) or the test benchmark."""
    config = load_sources_config()
    spec = config.seed_sources["gsm8k"] if split == "train" else config.benchmarks["gsm8k_test"]
    label, records = open_source(spec, base=data_dir())
    table, _ = build_problems(records, spec, source="gsm8k" if split == "train" else "gsm8k_test", label=label)
    return table


def augmented_pairs(seeds: int, ledger_dir: str) -> tuple[list[tuple[str, str]], dict]:
    """(question, response) pairs from the MuggleMath functions and the embedded model, and counts."""
    llm = LLMResource(ledger_dir=ledger_dir, progress_interval_s=30)
    seed_table = solver_subset(gsm8k("train"), max_questions=seeds, salt="mugglemath-scaling")
    params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=200)
    jobs, _ = rewrite_jobs(
        seed_table, types=REWRITE_TYPES, k=2, rounds=1, variant="gsm8k", params=params, salt="mugglemath-scaling"
    )
    results, _ = llm.generate(None, [j.request for j in jobs], ledger_name="scaling/augment")
    questions, counts = new_problems(
        seed_table, jobs, results, source="gsm8k", k=2, params_hash="scaling", models={0: llm.model_id()}
    )
    specs = [SampleSpec(r["problem_id"], r["question"], 0, 0) for r in questions.to_pylist()]
    samples = draw_samples(
        specs,
        template=get_template("chat"),
        params=SamplingParams(temperature=0.7, top_p=0.95, max_tokens=400),
        seed_salt="mugglemath-scaling",
        model=llm.model_id(),
        generate=llm.generate_fn(None, [], ledger_name="scaling/responses"),
    )
    llm.close_engine()
    with Grader() as grader:
        voted, vote_counts = vote_columns(samples, grader, check_annotations=True, min_share=0.5)
    text_of = dict(zip(questions.column("problem_id").to_pylist(), questions.column("question").to_pylist()))
    pairs = [(text_of[r["problem_id"]], r["text"]) for r in voted.to_pylist() if r["kept"]]
    return pairs, {"rewrite_requests": len(jobs), "augmented_questions": questions.num_rows, **vote_counts, **counts}


def encode(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + newline + response + EOS, and where the response starts."""
    prompt_ids = tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    return ids, min(len(prompt_ids), len(ids))


def fine_tune(pairs: list[tuple[str, str]], *, max_length: int, seed: int):
    """LoRA (r 8 on the attention projections), one epoch, batch 1, AdamW lr 2e-4, loss on the response."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model, tokenizer = load_causal_lm("embedded")
    if not pairs:
        return model, tokenizer
    model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    for question, response in pairs:
        ids, start = encode(tokenizer, ALPACA.prompt(question), response, max_length)
        labels = [-100] * start + ids[start:]
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model, tokenizer


def mean_logprob(model, tokenizer, items: list[tuple[str, str]], max_length: int) -> float:
    """Mean over items of the mean log-probability per token of the reference solution."""
    import torch

    scores = []
    with torch.no_grad():
        for question, solution in items:
            ids, start = encode(tokenizer, ALPACA.prompt(question), solution, max_length)
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            targets = torch.tensor(ids[1:])
            token_lp = logprobs[torch.arange(len(targets)), targets][start - 1 :]
            scores.append(float(token_lp.mean()))
    return float(np.mean(scores))


def log_linear_fit(sizes: list[int], scores: list[float]) -> tuple[float | None, float | None]:
    """(a, b) of score = a + b ln N over the sizes > 0 (None with fewer than two)."""
    points = [(math.log(n), s) for n, s in zip(sizes, scores) if n > 0]
    if len(points) < 2:
        return None, None
    x, y = np.array(points).T
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 4 seeds, sizes 0,2,4,8, 8 items")
    parser.add_argument("--seeds", type=int, default=6, help="GSM8K train seeds to augment")
    parser.add_argument("--sizes", default="0,4,8,16,32", help="augmented rows per fine-tune, comma-separated")
    parser.add_argument("--eval-items", type=int, default=32, help="GSM8K test items scored")
    parser.add_argument("--max-length", type=int, default=320, help="tokens per training or scored text")
    parser.add_argument("--data", default="", help="JSONL of {query, response} to use instead of generating")
    parser.add_argument("--ledger-dir", default="", help="request ledger folder (reuse it to skip generation)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.sizes, args.eval_items = 4, "0,2,4,8", 8
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    start = time.perf_counter()
    if args.data:
        with open(args.data, encoding="utf-8") as handle:
            pairs = [(r["query"], r["response"]) for r in map(json.loads, handle)]
        counts = {"rows_read": len(pairs)}
    else:
        ledger = args.ledger_dir or tempfile.mkdtemp(prefix="mugglemath-scaling-")
        pairs, counts = augmented_pairs(args.seeds, ledger)
    data_seconds = time.perf_counter() - start
    test = gsm8k("test").to_pylist()
    items = [(r["question"], r["reference_solution"]) for r in test[: args.eval_items]]
    usable = [n for n in sizes if n <= len(pairs)]
    print(f"{len(pairs)} augmented pairs in {data_seconds:.0f} s ({counts}); sizes {usable} of {sizes}")
    scores, seconds = [], []
    for n in usable:
        began = time.perf_counter()
        model, tokenizer = fine_tune(pairs[:n], max_length=args.max_length, seed=args.seed)
        scores.append(mean_logprob(model, tokenizer, items, args.max_length))
        seconds.append(time.perf_counter() - began)
        print(f"N={n:4d}  mean log-prob/token {scores[-1]:.4f}  ({seconds[-1]:.0f} s)")
    a, b = log_linear_fit(usable, scores)
    print(
        json.dumps(
            {
                "benchmark": "mugglemath_scaling",
                "augmented_pairs": len(pairs),
                "sizes": usable,
                "mean_logprob_per_token": [round(s, 4) for s in scores],
                "baseline_n0": round(scores[0], 4) if usable and usable[0] == 0 else None,
                "fit_a": None if a is None else round(a, 4),
                "fit_b_per_ln_n": None if b is None else round(b, 4),
                "eval_items": len(items),
                "data_seconds": round(data_seconds, 1),
                "sweep_seconds": round(sum(seconds), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
