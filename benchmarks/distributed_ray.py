"""Requests per second through the `ray` engine backend with one vs two Ray workers (the Ray half
of benchmarks/distributed.py; joined there as `--part ray`).

    .venv/bin/python benchmarks/distributed_ray.py [--quick] [--requests N] [--max-tokens N]

Starts a local Ray cluster on this machine (a head without CPUs and two worker nodes of one CPU
each), then sends the same chat requests (same seeds) through the request ledger to a `ray` engine
with one actor and to one with two actors (one per node), each actor running the embedded
SmolLM2-135M on llama.cpp with one thread. Both engines stay up (half a CPU reserved per actor)
and the two paths alternate chunk by chunk against fresh ledgers, so load from anything else on the
machine falls on both alike and nothing is a cache hit. Each engine first serves one warm-up
request per actor. On a 2-core machine the ideal ratio is 2 only when both cores are free.
Prints both rates and their ratio; the last line is JSON. The cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.engines.base import Request, SamplingParams  # noqa: E402
from mathdata_pipeline.engines.factory import build_engine  # noqa: E402
from mathdata_pipeline.engines.ledger import RequestLedger  # noqa: E402
from mathdata_pipeline.engines.runner import run_requests  # noqa: E402


def _requests(count: int, max_tokens: int, salt: str) -> list[Request]:
    return [
        Request.chat(
            [{"role": "user", "content": f"Explain step by step why {i} + {i} = {2 * i}.{salt}"}],
            SamplingParams(0.8, 0.95, max_tokens, seed=i),
        )
        for i in range(count)
    ]


def _engine(address: str, replicas: int):
    profile = {
        "backend": "ray",
        "address": address,
        "replicas": replicas,
        "num_cpus": 0.5,  # both engines fit on the two one-CPU nodes at once
        "engine": {"backend": "local", "n_ctx": 1024, "n_threads": 1},
    }
    engine = build_engine(profile)
    with tempfile.TemporaryDirectory() as folder, RequestLedger(Path(folder) / "warmup.sqlite") as ledger:
        run_requests(engine, ledger, _requests(replicas, 4, " warm-up"), log=lambda _: None)
    return engine


def ray_part(count: int, max_tokens: int) -> dict:
    """Run the comparison on a fresh local cluster (stopped at the end); print both rates and
    return the headline figures (requests/s per path, their ratio, requests per worker)."""
    import ray

    from mathdata_pipeline_tests.services import local_ray_cluster

    chunk = 4
    engines = {}
    with local_ray_cluster(workers=2) as cluster:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        try:
            engines = {"one_worker": _engine(cluster.address, 1), "two_workers": _engine(cluster.address, 2)}
            requests = _requests(count, max_tokens, "")
            seconds = dict.fromkeys(engines, 0.0)
            tokens = dict.fromkeys(engines, 0)
            with tempfile.TemporaryDirectory() as folder:
                for start in range(0, count, chunk):
                    for name, engine in engines.items():
                        with RequestLedger(Path(folder) / f"{name}.sqlite") as ledger:
                            began = time.perf_counter()
                            batch = requests[start : start + chunk]
                            _, stats = run_requests(engine, ledger, batch, log=lambda _: None)
                            seconds[name] += time.perf_counter() - began
                            tokens[name] += stats.completion_tokens
            served = [r.served for r in engines["two_workers"].replicas]
        finally:
            for engine in engines.values():
                engine.close()
            ray.shutdown()
    rate = {name: count / seconds[name] for name in engines}
    for name in engines:
        print(f"{name}: {count} requests, {tokens[name]} tokens in {seconds[name]:.2f} s = {rate[name]:.2f} requests/s")
    ratio = rate["two_workers"] / rate["one_worker"]
    print(f"ratio {ratio:.2f} (ideal 2 with two free cores; this machine has 2 vCPU shared with other jobs)")
    return {
        "requests": count,
        "max_tokens": max_tokens,
        "one_worker_requests_per_second": round(rate["one_worker"], 3),
        "two_workers_requests_per_second": round(rate["two_workers"], 3),
        "ratio": round(ratio, 3),
        "requests_per_worker": served,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--requests", type=int, default=0, help="requests per path (default 32, quick 8)")
    parser.add_argument("--max-tokens", type=int, default=0, help="tokens per request at most (default 64, quick 32)")
    args = parser.parse_args()
    count = args.requests or (8 if args.quick else 32)
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    print(json.dumps({"benchmark": "distributed", "part": "ray", **ray_part(count, max_tokens)}))


if __name__ == "__main__":
    main()
