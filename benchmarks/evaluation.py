"""Benchmark-scoring throughput: items per second for the log-probability (batched) and for the
accuracy (through the engine layer), each against a plain transformers loop over the same items.

    .venv/bin/python benchmarks/evaluation.py [--quick] [--items N] [--answers M] [--max-new-tokens T]

Model: the embedded SmolLM2-135M-Instruct. Items: GSM8K test and MATH-500 (half each, picked by
`items.select_items` with the benchmark_scores salt), prompts in the model's chat template.
- Log-probability of each item's reference solution: `evaluation.logprob.BatchScorer` (length-
  sorted batches, left padding, the LM head on completion positions only) vs one unpadded forward
  pass per item with a full log-softmax. Both run transformers in float32 on the same weights; the
  largest difference of their scores is reported as well.
- Accuracy: greedy answers to the first M items through the engine layer (llama.cpp serving the
  f16 GGUF that `sft.export_reference` writes, as benchmark_scores serves every model, with a fresh
  request ledger) vs `model.generate` (transformers, greedy, one item at a time), both graded by
  the `Grader`.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from mathdata_pipeline.common.training import TrainingSettings  # noqa: E402
from mathdata_pipeline.engines.base import Completion, Request, SamplingParams  # noqa: E402
from mathdata_pipeline.engines.factory import build_engine, for_trained_model, load_profile  # noqa: E402
from mathdata_pipeline.engines.ledger import RequestLedger  # noqa: E402
from mathdata_pipeline.engines.runner import run_requests  # noqa: E402
from mathdata_pipeline.evaluation.items import logprob_target, select_items  # noqa: E402
from mathdata_pipeline.evaluation.logprob import BatchScorer  # noqa: E402
from mathdata_pipeline.evaluation.sft import export_reference  # noqa: E402
from mathdata_pipeline.grading import Grader  # noqa: E402
from mathdata_pipeline.sources.config import data_dir, load_sources_config, open_source  # noqa: E402
from mathdata_pipeline.sources.problems import build_problems  # noqa: E402

BENCHMARKS = ("gsm8k_test", "math500")


def load_items(count: int) -> list[dict]:
    """`count` items, half from each benchmark, as benchmark_scores picks them."""
    config, tables = load_sources_config(), []
    for name in BENCHMARKS:
        label, records = open_source(config.benchmarks[name], base=data_dir())
        table, _ = build_problems(records, config.benchmarks[name], source=name, label=label)
        tables.append(table.append_column("benchmark", pa.array([name] * table.num_rows, pa.string())))
    items = select_items(pa.concat_tables(tables), list(BENCHMARKS), count // 2, 0, "benchmark_scores")
    return items.to_pylist()


def plain_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """The baseline: one unpadded forward pass, log-softmax over every position."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([p + c])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)[len(p) - 1 : len(p) + len(c) - 1]
    return float(logprobs.gather(-1, torch.tensor(c)[:, None]).sum())


def bench_logprob(items: list[dict], hf_dir: Path) -> dict:
    """Log-probabilities of the reference solutions: BatchScorer vs one forward pass per item."""
    scorer = BatchScorer(hf_dir, model_id="bench", max_tokens=4096, batch_tokens=8192)
    pairs = [
        (scorer.chat_prompt(r["question"]), logprob_target(r["reference_solution"], r["reference_answer"])[0])
        for r in items
    ]
    tokens = sum(len(p) + len(c) for p, c in (scorer.encode(*pair) for pair in pairs))
    start = time.perf_counter()
    batched = scorer.score(pairs)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = [plain_logprob(scorer.model, scorer.tokenizer, p, c) for p, c in pairs]
    plain_s = time.perf_counter() - start
    return {
        "items": len(pairs),
        "tokens": tokens,
        "batched_items_per_second": len(pairs) / batched_s,
        "plain_items_per_second": len(pairs) / plain_s,
        "max_abs_difference": max(abs(b.logprob - x) for b, x in zip(batched, plain)),
    }


def bench_accuracy(items: list[dict], model_dir: Path, max_new_tokens: int, ledger: Path) -> dict:
    """Greedy answers through llama.cpp (`model_dir/model.gguf`) and through transformers generate."""
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, seed=0)
    requests = [Request.chat([{"role": "user", "content": r["question"]}], params) for r in items]
    references = [r["reference_answer"] or "" for r in items]
    engine = build_engine(for_trained_model(load_profile("local-smollm2"), model_dir))
    start = time.perf_counter()
    with RequestLedger(ledger) as store:
        results, _ = run_requests(engine, store, requests, log=lambda _: None, max_error_share=1.0)
    engine_s = time.perf_counter() - start
    engine.close()
    engine_texts = [r.text if isinstance(r, Completion) else "" for r in results]
    scorer = BatchScorer(model_dir / "hf", model_id="bench")
    model, tokenizer = scorer.model, scorer.tokenizer
    start = time.perf_counter()
    plain_texts = []
    for request in requests:
        ids = tokenizer(scorer.chat_prompt(request.messages[0][1]), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        plain_texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    plain_s = time.perf_counter() - start
    with Grader() as grader:
        engine_ok = sum(v.correct for v in grader.grade_many(list(zip(engine_texts, references))))
        plain_ok = sum(v.correct for v in grader.grade_many(list(zip(plain_texts, references))))
    return {
        "items": len(requests),
        "engine_items_per_second": len(requests) / engine_s,
        "plain_items_per_second": len(requests) / plain_s,
        "engine_correct": engine_ok,
        "plain_correct": plain_ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    parser.add_argument("--items", type=int, default=0, help="items for log-probability (default 200; quick 16)")
    parser.add_argument("--answers", type=int, default=0, help="items answered for accuracy (default 16; quick 4)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="tokens per answer (default 256; quick 48)")
    args = parser.parse_args()
    count = args.items or (16 if args.quick else 200)
    answers = args.answers or (4 if args.quick else 16)
    max_new_tokens = args.max_new_tokens or (48 if args.quick else 256)
    torch.manual_seed(0)
    items = load_items(count)
    with tempfile.TemporaryDirectory() as tmp:
        reference = export_reference("embedded", Path(tmp) / "base", TrainingSettings())
        logprob = bench_logprob(items, reference.hf_dir)
        answered = items[:: max(1, len(items) // answers)][:answers]  # from both benchmarks
        ledger = Path(tmp) / "ledger.sqlite"
        accuracy = bench_accuracy(answered, reference.hf_dir.parent, max_new_tokens, ledger)
    print(f"log-probability, {logprob['items']} items ({logprob['tokens']} tokens):")
    print(f"  batched   {logprob['batched_items_per_second']:.2f} items/s")
    print(f"  plain     {logprob['plain_items_per_second']:.2f} items/s (one unpadded forward pass per item)")
    print(f"  largest score difference {logprob['max_abs_difference']:.2e} nats")
    print(f"accuracy, {accuracy['items']} greedy answers of at most {max_new_tokens} tokens:")
    engine, plain = accuracy["engine_items_per_second"], accuracy["plain_items_per_second"]
    print(f"  engine    {engine:.3f} items/s (llama.cpp, f16 GGUF), {accuracy['engine_correct']} correct")
    print(f"  plain     {plain:.3f} items/s (transformers generate), {accuracy['plain_correct']} correct")
    summary = {
        "benchmark": "evaluation",
        "logprob_items": logprob["items"],
        "logprob_items_per_second": round(logprob["batched_items_per_second"], 3),
        "logprob_plain_items_per_second": round(logprob["plain_items_per_second"], 3),
        "logprob_ratio": round(logprob["batched_items_per_second"] / logprob["plain_items_per_second"], 2),
        "logprob_max_abs_difference": float(f"{logprob['max_abs_difference']:.3g}"),
        "accuracy_items": accuracy["items"],
        "accuracy_items_per_second": round(accuracy["engine_items_per_second"], 4),
        "accuracy_plain_items_per_second": round(accuracy["plain_items_per_second"], 4),
        "accuracy_ratio": round(accuracy["engine_items_per_second"] / accuracy["plain_items_per_second"], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
