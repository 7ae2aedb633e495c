"""Generation throughput: the raw engine vs the same prompts through the `llm` resource
(request ledger, per-row errors, statistics and metadata included); or, with `--two-servers`,
one llama.cpp server vs two behind one `openai` profile (data-parallel replicas).

    .venv/bin/python benchmarks/generation.py [--quick] [--profile local-smollm2] [--requests N]
    .venv/bin/python benchmarks/generation.py --two-servers [--quick] [--requests N]

Each path runs the same requests (same seeds) against a fresh ledger, so nothing is a cache hit.
The two paths alternate chunk by chunk, so load from anything else on the machine falls on both
alike. `--two-servers` starts two `python -m llama_cpp.server` processes on loopback with the
embedded model, one thread each, and sends the requests through the `openai` backend (chat API,
2 requests in flight per server) to the first server alone and to both; goal: the two-server
throughput close to twice the one-server throughput when two cores are free. Prints both
throughputs and their ratio; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.metadata import generation_metadata  # noqa: E402
from mathdata_pipeline.engines.base import Completion, Request, SamplingParams, derive_seed  # noqa: E402
from mathdata_pipeline.engines.ledger import RequestLedger  # noqa: E402
from mathdata_pipeline.engines.openai_http import OpenAIEngine  # noqa: E402
from mathdata_pipeline.engines.resources import LLMResource  # noqa: E402
from mathdata_pipeline.engines.runner import run_requests  # noqa: E402

CHUNK = 4
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "What is the smallest positive integer n such that 3n is a perfect square and 2n is a perfect cube?",
    "If x + y = 10 and x - y = 2, what is the value of x?",
]


def make_requests(count: int, max_tokens: int) -> list[Request]:
    """`count` sampled chat requests over a few GSM8K/MATH-style questions, each with its own seed."""
    return [
        Request.chat(
            [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + " Think step by step."}],
            SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=derive_seed("bench", i)),
        )
        for i in range(count)
    ]


def two_servers(count: int, max_tokens: int) -> None:
    """One llama.cpp server vs two through the `openai` backend, alternating chunks."""
    from contextlib import ExitStack

    from mathdata_pipeline_tests.engines.servers import MODEL_ALIAS, llama_cpp_server

    requests = make_requests(count, max_tokens)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as ledgers:
        urls = [stack.enter_context(llama_cpp_server(n_ctx=2048, n_threads=1)) for _ in range(2)]
        engines = {
            name: stack.enter_context(OpenAIEngine(base_url=u, model=MODEL_ALIAS, api="chat", max_concurrency=2))
            for name, u in (("one", urls[0]), ("two", urls))
        }
        list(engines["two"].generate(requests[:2]))  # warm-up of both servers, outside the timings
        tokens, seconds = {"one": 0, "two": 0}, {"one": 0.0, "two": 0.0}
        chunk = 8
        for start in range(0, count, chunk):
            for name, engine in engines.items():
                with RequestLedger(Path(ledgers) / f"{name}.sqlite") as ledger:
                    t0 = time.perf_counter()
                    _, stats = run_requests(engine, ledger, requests[start : start + chunk], log=lambda _: None)
                    seconds[name] += time.perf_counter() - t0
                    tokens[name] += stats.completion_tokens
        load = engines["two"].endpoint_load()
    one, two = tokens["one"] / seconds["one"], tokens["two"] / seconds["two"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {count} chat requests x up to {max_tokens} tokens")
    print(f"one server : {tokens['one']} tokens in {seconds['one']:.2f}s = {one:.1f} tokens/s")
    print(f"two servers: {tokens['two']} tokens in {seconds['two']:.2f}s = {two:.1f} tokens/s")
    print(f"requests answered per server (two-server engine): {list(load.values())}")
    print(f"ratio      : {two / one:.3f} (ideal 2 with two free cores)")
    print(
        json.dumps(
            {
                "benchmark": "generation",
                "case": "two_servers",
                "requests": count,
                "one_server_tokens_per_second": round(one, 1),
                "two_servers_tokens_per_second": round(two, 1),
                "ratio": round(two / one, 3),
                "requests_per_server": list(load.values()),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--profile", default=os.environ.get("MATHDATA_LLM_PROFILE", "local-smollm2"))
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--two-servers", action="store_true", help="one llama.cpp server vs two (openai backend)")
    args = parser.parse_args()
    count = args.requests or (8 if args.quick else 64)
    max_tokens = args.max_tokens or (32 if args.quick else 128)
    if args.two_servers:
        two_servers(count, max_tokens)
        return
    requests = make_requests(count, max_tokens)

    with tempfile.TemporaryDirectory() as ledgers:
        llm = LLMResource(profile=args.profile, ledger_dir=ledgers, progress_interval_s=3600)
        engine = llm.engine()
        list(engine.generate(requests[:1]))  # warm-up, outside both timings

        raw_tokens = resource_tokens = 0
        raw_seconds = resource_seconds = 0.0
        for start in range(0, count, CHUNK):
            chunk = requests[start : start + CHUNK]
            t0 = time.perf_counter()
            raw_tokens += sum(r.completion_tokens for _, r in engine.generate(chunk) if isinstance(r, Completion))
            t1 = time.perf_counter()
            _, stats = llm.generate(None, chunk, ledger_name="bench")
            generation_metadata(stats)
            resource_tokens += stats.completion_tokens
            raw_seconds, resource_seconds = raw_seconds + t1 - t0, resource_seconds + time.perf_counter() - t1
        engine.close()

    raw_tps = raw_tokens / raw_seconds
    resource_tps = resource_tokens / resource_seconds
    ratio = resource_tps / raw_tps
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; profile {args.profile}; "
        f"{count} requests x up to {max_tokens} tokens"
    )
    print(f"raw engine     : {raw_tokens} tokens in {raw_seconds:.2f}s = {raw_tps:.1f} tokens/s")
    print(f"through ledger : {resource_tokens} tokens in {resource_seconds:.2f}s = {resource_tps:.1f} tokens/s")
    print(f"ratio          : {ratio:.3f} (goal >= 0.9)")
    print(
        json.dumps(
            {
                "benchmark": "generation",
                "profile": args.profile,
                "requests": count,
                "raw_tokens_per_second": round(raw_tps, 1),
                "tokens_per_second": round(resource_tps, 1),
                "ratio": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
