"""LESS-style gradient features: GradientFeaturizer.features against a naive per-example loop.

    .venv/bin/python benchmarks/influence.py [--quick] [--n 16] [--max-length 256]
        [--max-batch-tokens 1024] [--proj-dim 8192] [--rounds 2] [--device auto|cpu|cuda] [--dtype auto|...]

Examples: the first N GSM8K train problems, the question in the Alpaca prompt and the reference
solution as the response. Model: the embedded SmolLM2-135M (transformers; float32 on the CPU,
bfloat16 on CUDA with `auto`) with a fresh LoRA r=8 adapter on q/k/v/o (921,600 gradient
coordinates), SGD features.

- naive: what simple code does: for each example one forward and `loss.backward()` (HF's own
  loss), the LoRA `.grad`s concatenated, projected with the featurizer's projection (built once,
  like the featurizer's: an earlier version rebuilt it per example, which inflated the ratio) and
  normalised.
- featurizer: `GradientFeaturizer.features`: length-sorted batches cut by a token budget, one
  forward/backward per batch with per-example gradients from hooks.

The two are timed alternately `--rounds` times and the best time of each counts (the machine is
shared). Both must give the same vectors (min cosine printed, must be > 0.9999). The last line of
stdout is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.templates import get_template  # noqa: E402
from mathdata_pipeline.influence.gradient_features import (  # noqa: E402
    Example,
    GradientFeaturizer,
    SparseSignProjection,
    encode_example,
    token_batches,
)
from mathdata_pipeline.sources.config import data_dir  # noqa: E402


def gsm8k_examples(n: int) -> list[Example]:
    """The first `n` GSM8K train rows as (Alpaca prompt, reference solution) examples."""
    template = get_template("alpaca")
    with gzip.open(data_dir() / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(next(handle)) for _ in range(n)]
    return [Example(f"gsm8k-train-{i}", template.prompt(r["question"]), r["answer"]) for i, r in enumerate(rows)]


def naive_features(featurizer: GradientFeaturizer, examples: list[Example]) -> np.ndarray:
    """One backward per example, projected with the featurizer's projection (see module doc)."""
    model, tokenizer, device = featurizer.model, featurizer.tokenizer, featurizer.device
    params = dict(model.named_parameters())
    vectors = []
    for example in examples:
        ids, labels = encode_example(tokenizer, example, featurizer.max_length)
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            model(
                input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device)
            ).loss.backward()
        grad = torch.cat([params[name].grad.reshape(-1).float() for name in featurizer.parameter_names])
        projected = featurizer.projection.project(grad[None])[0]
        vectors.append((projected / projected.norm()).cpu().numpy())
    model.zero_grad(set_to_none=True)
    return np.stack(vectors)


def timed(function, device: str):
    """(result, seconds) of function(), synchronising CUDA around it."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 examples, max_length 128, one round")
    parser.add_argument("--n", type=int, default=16, help="number of GSM8K examples")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-batch-tokens", type=int, default=1024, help="featurizer token budget per batch")
    parser.add_argument("--proj-dim", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds; the best counts")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.max_length, args.rounds = 4, 128, 1

    examples = gsm8k_examples(args.n)
    load_start = time.perf_counter()
    featurizer = GradientFeaturizer(
        "embedded",
        proj_dim=args.proj_dim,
        max_length=args.max_length,
        max_batch_tokens=args.max_batch_tokens,
        device=args.device,
        dtype=args.dtype,
    )
    device = featurizer.device
    load_seconds = time.perf_counter() - load_start
    _, build_seconds = timed(lambda: SparseSignProjection(featurizer.gradient_dim, args.proj_dim), device)
    lengths = [len(encode_example(featurizer.tokenizer, e, args.max_length)[0]) for e in examples]
    tokens, batches = sum(lengths), len(token_batches(lengths, args.max_batch_tokens))

    best = {"naive": float("inf"), "featurizer": float("inf")}
    for _ in range(args.rounds):
        naive, seconds = timed(lambda: naive_features(featurizer, examples), device)
        best["naive"] = min(best["naive"], seconds)
        fast, seconds = timed(lambda: featurizer.features(examples), device)
        best["featurizer"] = min(best["featurizer"], seconds)
    min_cosine = float(np.min(np.sum(naive * fast, axis=1)))
    if min_cosine < (0.9999 if featurizer.dtype == "float32" else 0.99):
        raise SystemExit(f"featurizer and naive features differ: min cosine {min_cosine}")

    naive_eps, fast_eps = args.n / best["naive"], args.n / best["featurizer"]
    print(
        f"device {device} ({featurizer.dtype}), torch threads {torch.get_num_threads()}; "
        f"model load {load_seconds:.1f} s; "
        f"gradient dim {featurizer.gradient_dim:,} -> proj_dim {args.proj_dim} (projection build {build_seconds:.2f} s)"
    )
    print(f"{args.n} GSM8K examples, {tokens} tokens (max_length {args.max_length}), best of {args.rounds} round(s)")
    print(f"{'method':<12} {'seconds':>8} {'examples/s':>10}")
    print(f"{'naive':<12} {best['naive']:>8.2f} {naive_eps:>10.3f}")
    print(
        f"{'featurizer':<12} {best['featurizer']:>8.2f} {fast_eps:>10.3f}   "
        f"({batches} batches, token budget {args.max_batch_tokens})"
    )
    print(f"ratio featurizer / naive = {fast_eps / naive_eps:.2f}x; min cosine between outputs {min_cosine:.6f}")
    print(
        json.dumps(
            {
                "benchmark": "influence",
                "ratio": round(fast_eps / naive_eps, 3),
                "examples_per_second": round(fast_eps, 4),
                "naive_examples_per_second": round(naive_eps, 4),
                "n": args.n,
                "tokens": tokens,
                "max_length": args.max_length,
                "max_batch_tokens": args.max_batch_tokens,
                "batches": batches,
                "proj_dim": args.proj_dim,
                "gradient_dim": featurizer.gradient_dim,
                "projection_build_seconds": round(build_seconds, 3),
                "min_cosine": round(min_cosine, 6),
                "device": device,
                "dtype": featurizer.dtype,
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
