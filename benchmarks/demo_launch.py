"""Per-run cost of `demo.launch` (runs created with their job's origins in the code location of
`workspace.yaml`, executed in this process) against the baseline `JobDefinition.execute_in_process`
with the same tags (what `demo.launch` did before: runs without origins, absent from the UI's
Overview timeline). Both materialize the cheap `eval_benchmarks` asset into a throwaway
DAGSTER_HOME with the repo's `dagster.yaml`, alternating, so machine load hits both alike.

    .venv/bin/python benchmarks/demo_launch.py [--runs 10] [--quick]

The last line is one JSON object: median seconds per run of each, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Time `--runs` launches of each way (after one warm-up of each); print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each way")
    parser.add_argument("--quick", action="store_true", help="3 runs of each (CI)")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="demo-launch-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ["MATHDATA_STORAGE"] = str(Path(tmp) / "storage")
        import dagster as dg

        from mathdata_pipeline import demo
        from mathdata_pipeline.automation import worker_tags

        key = dg.AssetKey("eval_benchmarks")
        job = demo.defs.resolve_job_def("sources_job")
        config = {"ops": {}, "loggers": {"console": {"config": {"log_level": "INFO"}}}}

        def baseline(instance: dg.DagsterInstance) -> bool:
            tags = {demo.DEMO_TAG: "true", **worker_tags()}
            return job.execute_in_process(
                run_config=config, instance=instance, asset_selection=[key], tags=tags, raise_on_error=False
            ).success

        ways = {"execute_in_process": baseline, "demo_launch": lambda i: demo.launch(i, key, None, {}).success}
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        with dg.DagsterInstance.get() as instance:
            for name, way in ways.items():  # warm-up: imports, caches, first SQLite writes
                assert way(instance), f"{name} failed"
            for _ in range(runs):
                for name, way in ways.items():
                    started = time.perf_counter()
                    assert way(instance), f"{name} failed"
                    seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"{name}: median {medians[name]:.3f} s, min {min(values):.3f} s, max {max(values):.3f} s ({runs} runs)")
    summary = {
        "benchmark": "demo_launch",
        "runs": runs,
        "execute_in_process_s": round(medians["execute_in_process"], 3),
        "demo_launch_s": round(medians["demo_launch"], 3),
        "ratio": round(medians["demo_launch"] / medians["execute_in_process"], 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
