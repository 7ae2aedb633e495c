"""QaDS quality scoring: many (prompt, completion) pairs per engine call vs one pair per call.

    .venv/bin/python benchmarks/scoring.py [--quick] [--profile local-smollm2] [--candidates 6] [--anchors 16]

Pairs are the ones QaDS scores (`qads.quality`): for M anchors, the anchor's answer after the
zero-shot prompt, and for N candidates x M anchors, the anchor's answer after the candidate as a
one-shot demonstration (real GSM8K training solutions as candidates and anchors). Both paths score
the same pairs on the same engine: `engine.score` pair by pair (every pair evaluated from an empty
cache, as the pipeline did before) and `engine.score_many` on all pairs at once (llama.cpp keeps
the shared demonstration prefix in its cache between anchors; vLLM: one call with prompt
log-probabilities and prefix caching). The two alternate in chunks of candidates, so load from
anything else on the machine falls on both alike. Reported: pairs per second of each, their ratio
(goal >= 5 on this CPU), and the largest absolute difference between the two paths' summed
log-probabilities. The last line is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.engines.base import TokenScore  # noqa: E402
from mathdata_pipeline.engines.factory import build_engine, load_profile  # noqa: E402
from mathdata_pipeline.qads.quality import chat_renderer, one_shot_messages, zero_shot_messages  # noqa: E402
from mathdata_pipeline.sources.config import data_dir  # noqa: E402


def gsm8k_examples(count: int) -> list[tuple[str, str]]:
    """The first `count` GSM8K training (question, solution) pairs."""
    examples = []
    with gzip.open(data_dir() / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            examples.append((row["question"], row["answer"]))
            if len(examples) == count:
                break
    return examples


def evaluated_tokens(tokenize, pairs: list[tuple[str, str]], *, reuse_prefix: bool) -> int:
    """Tokens llama.cpp must evaluate to score `pairs`: every token but the last of each pair from
    an empty cache, or (`reuse_prefix`, pairs in the sorted order `score_many` uses) only those
    after the prefix shared with the previous pair, re-evaluating from the last prompt token on."""
    total, previous = 0, []
    for prompt, completion in sorted(pairs) if reuse_prefix else pairs:
        prompt_ids = tokenize(prompt)
        ids = prompt_ids + tokenize(completion)
        keep = 0
        if reuse_prefix:
            limit = min(len(previous), len(prompt_ids) - 1)
            while keep < limit and previous[keep] == ids[keep]:
                keep += 1
        total += len(ids) - 1 - keep
        previous = ids
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--profile", default=os.environ.get("MATHDATA_LLM_PROFILE", "local-smollm2"))
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--anchors", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=2, help="candidates per alternation")
    args = parser.parse_args()
    n = args.candidates or (4 if args.quick else 6)
    m = args.anchors or (4 if args.quick else 16)
    examples = gsm8k_examples(n + m)
    candidates, anchors = examples[:n], examples[n:]
    engine = build_engine(load_profile(args.profile))
    render = chat_renderer(engine)  # the pipeline's default scoring template (qads `template: chat`)
    zero = [(render(zero_shot_messages(q)), a) for q, a in anchors]
    groups = [[(render(one_shot_messages(*candidate, q)), a) for q, a in anchors] for candidate in candidates]
    engine.score(*zero[0])  # warm-up, outside both timings
    single: list[TokenScore] = []
    batched: list[TokenScore] = []
    single_s = batched_s = 0.0
    chunks = [zero] + [sum(groups[i : i + args.chunk], []) for i in range(0, n, args.chunk)]
    for chunk in chunks:
        t0 = time.perf_counter()
        single += [engine.score(*pair) for pair in chunk]
        t1 = time.perf_counter()
        batched += engine.score_many(chunk)
        single_s, batched_s = single_s + t1 - t0, batched_s + time.perf_counter() - t1
    pairs = len(single)
    assert all(isinstance(s, TokenScore) for s in batched), "a benchmark pair did not fit the context"
    diff = max(abs(a.logprob - b.logprob) for a, b in zip(single, batched))
    same_tokens = all(a.tokens == b.tokens for a, b in zip(single, batched))
    tokens = sum(s.tokens for s in single)
    ratio = single_s / batched_s
    all_pairs = sum(chunks, [])
    bound = None
    if hasattr(engine, "tokenize"):  # llama.cpp: the work each path must do, in evaluated tokens
        single_tokens = evaluated_tokens(engine.tokenize, all_pairs, reuse_prefix=False)
        batched_tokens = sum(evaluated_tokens(engine.tokenize, chunk, reuse_prefix=True) for chunk in chunks)
        bound = single_tokens / batched_tokens
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; profile {args.profile}; {pairs} pairs "
        f"({m} zero-shot + {n} candidates x {m} anchors), {tokens} scored tokens"
    )
    print(f"one pair per call: {single_s:7.2f} s = {pairs / single_s:6.2f} pairs/s")
    print(f"batched          : {batched_s:7.2f} s = {pairs / batched_s:6.2f} pairs/s")
    print(f"ratio            : {ratio:.2f} (goal >= 5); max |logprob difference| {diff:.2e}; same tokens {same_tokens}")
    if bound is not None:
        print(
            f"evaluated tokens : {single_tokens} one pair per call vs {batched_tokens} batched: no exact method that "
            f"evaluates each anchor after its own demonstration can beat {bound:.2f}x on a compute-bound CPU"
        )
    engine.close()
    print(
        json.dumps(
            {
                "benchmark": "scoring",
                "profile": args.profile,
                "quick": args.quick,
                "pairs": pairs,
                "pairs_per_second_one_per_call": round(pairs / single_s, 3),
                "pairs_per_second_batched": round(pairs / batched_s, 3),
                "ratio": round(ratio, 2),
                "max_abs_logprob_diff": diff,
                "same_token_counts": same_tokens,
                "evaluated_token_ratio": round(bound, 2) if bound is not None else None,
            }
        )
    )


if __name__ == "__main__":
    main()
