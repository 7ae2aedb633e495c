"""Scale-out costs: tables on object storage vs local disk (`--part storage`); requests per second
through the `ray` engine backend with one vs two local Ray workers (`--part ray`, written in
benchmarks/distributed_ray.py, which also runs on its own); embeddings per second through
`compute: ray` with one vs two local Ray workers vs the local path (`--part embeddings`, written in
benchmarks/distributed_compute.py, which also runs on its own).

    .venv/bin/python benchmarks/distributed.py --part storage [--quick] [--rows 1000000] [--repeats 3]
    .venv/bin/python benchmarks/distributed.py --part ray [--quick]
    .venv/bin/python benchmarks/distributed.py --part embeddings [--quick]

Storage: one table of `--rows` rows shaped like the pipeline's (row and problem ids, a 200-character
text, a float score, an int index; seeded, so every run writes the same bytes) is written and read
back through the real `TableStore` (`write`: Parquet with zstd, atomic replace; `read`: the whole
table) on a local temporary folder (the baseline) and on an S3-compatible server on 127.0.0.1
(moto's `moto_server`, a separate process, data held in its memory; `TableStore` root
`s3://<bucket>/tables`, s3fs). Reported per backend: the median seconds of `--repeats` writes and
reads, and the S3/local ratio. The loopback server measures the cost of the object-storage path
(staging file, upload, HTTP, s3fs), not a real network or a real S3; both sides share the same two
cores. `--quick` (CI): 100,000 rows, one repeat. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.storage.resources import TableStore  # noqa: E402


def synthetic_table(rows: int, seed: int = 0) -> pa.Table:
    """`rows` rows like a solutions table: ids, a 200-character text, a score and an index."""
    rng = np.random.default_rng(seed)
    words = np.array(["the", "answer", "is", "x", "=", "3", "so", "we", "add", "12", "and", "divide", "by", "4"])
    texts = [" ".join(rng.choice(words, 40))[:200] for _ in range(min(rows, 4096))]
    return pa.table(
        {
            "row_id": pa.array([f"row-{i:08d}" for i in range(rows)]),
            "problem_id": pa.array([f"gsm8k-{i // 8:07d}" for i in range(rows)]),
            "text": pa.array([texts[i % len(texts)] + f" #{i}" for i in range(rows)]),
            "score": pa.array(rng.random(rows)),
            "sample_index": pa.array(np.arange(rows) % 8, pa.int64()),
        }
    )


def time_store(store: TableStore, table: pa.Table, repeats: int) -> dict:
    """Median seconds of `repeats` writes and whole-table reads of `table` through `store`."""
    writes, reads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        store.write(table, "benchmark_table")
        writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = store.read("benchmark_table")
        reads.append(time.perf_counter() - start)
        assert back.num_rows == table.num_rows
    return {"write_s": round(statistics.median(writes), 3), "read_s": round(statistics.median(reads), 3)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server as a child process on a free loopback port; returns it and its URL."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)


def storage_part(rows: int, repeats: int) -> dict:
    """Local disk vs moto S3 for one table of `rows` rows; the figures of the storage half."""
    table = synthetic_table(rows)
    scratch = Path(tempfile.mkdtemp(prefix="mathdata-bench-"))
    server, url = _start_moto()
    try:
        os.environ.update(
            AWS_ENDPOINT_URL=url,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            MATHDATA_CACHE_DIR=str(scratch / "cache"),
        )
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("mathdata-bench")
        local = time_store(TableStore(root=str(scratch / "local")), table, repeats)
        remote = time_store(TableStore(root="s3://mathdata-bench/tables"), table, repeats)
        size = (scratch / "local" / "benchmark_table" / "data.parquet").stat().st_size
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "rows": rows,
        "parquet_mb": round(size / 2**20, 1),
        "repeats": repeats,
        "local": local,
        "s3": remote,
        "write_ratio": round(remote["write_s"] / local["write_s"], 2),
        "read_ratio": round(remote["read_s"] / local["read_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["storage", "ray", "embeddings"], default="storage")
    parser.add_argument("--quick", action="store_true", help="CI size: 100,000 rows, one repeat")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.part == "ray":
        from distributed_ray import ray_part  # benchmarks/ is on sys.path when this file runs as a script

        count, max_tokens = (8, 32) if args.quick else (32, 64)
        print(json.dumps({"benchmark": "distributed", "part": "ray", **ray_part(count, max_tokens)}))
        return
    if args.part == "embeddings":
        from distributed_compute import embeddings_part  # benchmarks/ is on sys.path as above

        count, rounds = (64, 2) if args.quick else (1024, 4)
        print(json.dumps({"benchmark": "distributed", "part": "embeddings", **embeddings_part(count, rounds)}))
        return
    rows, repeats = (100_000, 1) if args.quick else (args.rows, args.repeats)
    result = storage_part(rows, repeats)
    for backend in ("local", "s3"):
        print(f"{backend:>5}: write {result[backend]['write_s']:.3f} s, read {result[backend]['read_s']:.3f} s")
    print(json.dumps({"benchmark": "distributed", "part": "storage", **result}))


if __name__ == "__main__":
    main()
