"""Embeddings per second through `compute: ray` (common/ray_map.py) with one vs two Ray workers, and
the local path as the baseline (the compute half of benchmarks/distributed.py, `--part embeddings`;
also runs on its own).

    .venv/bin/python benchmarks/distributed_compute.py [--quick] [--texts N]

Starts a local Ray cluster on this machine (a head without CPUs and two worker nodes of one CPU
each). Three paths embed the same texts (seeded synthetic question/answer pairs of about 200
characters) with the wheel's all-MiniLM-L6-v2 through `embed_with_cache`, each into a fresh cache
(so nothing is a hit): `local` (the model in this process, torch's own threads), `one_worker` and
`two_workers` (`RayEmbedder` pools; half a CPU reserved per actor so both pools fit at once, and
Ray gives each actor one torch thread). Every path has loaded its model and embedded one warm-up
chunk before the clock starts, and the three paths alternate round by round, so load from anything
else on the machine falls on all alike. Reported: texts per second per path and the ratios
two/one worker and two workers/local. On a 2-core machine two one-thread workers cannot beat the
local path, which already uses both cores: this measures the cost of the Ray path, not scale-out.
The last line is JSON. The cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.ray_map import RayCompute  # noqa: E402
from mathdata_pipeline.qads.embeddings import EmbeddingCache, SentenceEmbedder, embed_with_cache  # noqa: E402
from mathdata_pipeline.qads.ray_embeddings import RayEmbedder  # noqa: E402


def synthetic_texts(count: int, salt: str, seed: int = 0) -> list[str]:
    """`count` question/answer texts of about 200 characters, the same for the same arguments."""
    rng = np.random.default_rng(seed)
    words = ["the", "answer", "is", "x", "=", "3", "so", "we", "add", "12", "and", "divide", "by", "4", "train"]
    return [f"User: {salt} problem {i}: " + " ".join(rng.choice(words, 36)) for i in range(count)]


def embeddings_part(count: int, rounds: int) -> dict:
    """Run the comparison on a fresh local cluster (stopped at the end); print the rates and return
    the headline figures (texts/s per path, ratios, chunks per worker of the two-worker pool)."""
    import ray

    from mathdata_pipeline_tests.services import local_ray_cluster

    paths: dict = {}
    with local_ray_cluster(workers=2) as cluster:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        try:
            for name, workers in (("one_worker", 1), ("two_workers", 2)):
                compute = RayCompute(address=cluster.address, workers=workers, cpus_per_worker=0.5)
                paths[name] = RayEmbedder(compute, "sentence", model="embedded")
            paths = {"local": SentenceEmbedder("embedded"), **paths}
            seconds = dict.fromkeys(paths, 0.0)
            with tempfile.TemporaryDirectory() as folder:
                for name, embedder in paths.items():  # load every model and warm it up
                    embed_with_cache(synthetic_texts(8, "warm-up"), embedder, EmbeddingCache(Path(folder) / name))
                for index in range(rounds):
                    texts = synthetic_texts(count // rounds, f"round {index}")
                    for name, embedder in paths.items():
                        cache = EmbeddingCache(Path(folder) / f"{name}-{index}.parquet")
                        began = time.perf_counter()
                        _, hits, misses = embed_with_cache(texts, embedder, cache)
                        seconds[name] += time.perf_counter() - began
                        assert hits == 0 and misses == len(texts)
            chunks = [len(w.finished) for w in paths["two_workers"].pool.workers]
        finally:
            for embedder in paths.values():
                if isinstance(embedder, RayEmbedder):
                    embedder.close()
            ray.shutdown()
    done = count // rounds * rounds
    rate = {name: done / seconds[name] for name in paths}
    for name in paths:
        print(f"{name:>11}: {done} texts in {seconds[name]:.2f} s = {rate[name]:.1f} texts/s")
    print("2 vCPU shared with other jobs: two one-thread workers cannot show scale-out here")
    return {
        "texts": done,
        "local_texts_per_second": round(rate["local"], 2),
        "one_worker_texts_per_second": round(rate["one_worker"], 2),
        "two_workers_texts_per_second": round(rate["two_workers"], 2),
        "two_over_one_worker": round(rate["two_workers"] / rate["one_worker"], 3),
        "two_workers_over_local": round(rate["two_workers"] / rate["local"], 3),
        "chunks_per_worker": chunks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run: 64 texts")
    parser.add_argument("--texts", type=int, default=0, help="texts per path (default 1024, quick 64)")
    args = parser.parse_args()
    count = args.texts or (64 if args.quick else 1024)
    rounds = 2 if args.quick else 4
    print(json.dumps({"benchmark": "distributed", "part": "embeddings", **embeddings_part(count, rounds)}))


if __name__ == "__main__":
    main()
