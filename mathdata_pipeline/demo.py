"""`make demo`: materialize the whole asset graph with the demo configuration, then say where
everything is.

Runs go into the persistent instance under `DAGSTER_HOME`, so `make ui` shows every
materialization, its metadata and its lineage afterwards. Run config for each asset comes from
`configs/demo.yaml` (`ops: {asset_name: {config: …}}`) when that file names the asset.
"""

from __future__ import annotations

import os
import sys
import time
from graphlib import TopologicalSorter
from pathlib import Path

import dagster as dg
import yaml

from mathdata_pipeline.automation import (
    family_job_name,
    partition_tags,
    release_killed_runs,
    releasing_killed_runs,
    worker_tags,
)
from mathdata_pipeline.common.partitions import register_seed_sources
from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.definitions import defs
from mathdata_pipeline.run_config import check_run_config_file
from mathdata_pipeline.sources.config import data_dir


def materialization_plan(
    definitions: dg.Definitions, instance: dg.DagsterInstance, only: dict[str, list[str]] | None = None
) -> list[tuple[dg.AssetKey, str | None]]:
    """Every (asset key, partition key or None) to materialize, upstream before downstream.
    `only` limits the partitions of the named assets (e.g. one shard of `synthesized_questions`)."""
    only = only or {}
    specs = {spec.key: spec for spec in definitions.resolve_all_asset_specs()}
    graph = {key: {dep.asset_key for dep in spec.deps if dep.asset_key in specs} for key, spec in specs.items()}
    plan: list[tuple[dg.AssetKey, str | None]] = []
    for key in TopologicalSorter(graph).static_order():
        partitions = specs[key].partitions_def
        if partitions:
            keys = partitions.get_partition_keys(dynamic_partitions_store=instance)
            wanted = only.get(key.path[-1])
            plan.extend((key, p) for p in keys if wanted is None or p in wanted)
        else:
            plan.append((key, None))
    return plan


def demo_run_config(path: Path) -> dict:
    """A YAML file of the demo (`demo.yaml`: run config with `ops:` per asset; `demo-partitions.yaml`:
    partitions per asset), empty when the file does not exist."""
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


DEMO_TAG = "mathdata/demo"


def main() -> int:
    """Materialize the plan one run per asset partition; stop at the first failure."""
    instance = dg.DagsterInstance.get()
    if released := release_killed_runs(instance):
        print(f"[demo] marked {len(released)} killed run(s) as failed and freed their pool slots")
    try:
        run_config = check_run_config_file(config_dir() / "demo.yaml").get("ops", {})
    except ValueError as exc:
        print(f"[demo] invalid run config: {exc}")
        return 2
    only = demo_run_config(config_dir() / "demo-partitions.yaml")
    if new := register_seed_sources(instance):
        print(f"[demo] registered seed-source partitions: {', '.join(new)}")
    local = data_dir()
    print(
        f"[demo] datasets from {local}"
        if local
        else "[demo] no local data folder (MATHDATA_DATA_DIR, or ../shared/data beside the repo): "
        "reading every source by its Hugging Face id",
        flush=True,
    )
    started = time.monotonic()
    with releasing_killed_runs(instance):
        return _materialize_plan(instance, run_config, only, local, started)


def launch(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, op_config: dict
) -> dg.ExecuteInProcessResult:
    """Materialize one asset partition as a run of its stage-family job (`automation.FAMILIES`),
    in this process, tagged as a demo run with its partition (`mathdata/spec`, `mathdata/source`,
    `mathdata/shard`) and with this process as its worker. `op_config` is {asset name: {config}}
    or empty. Returns Dagster's result (never raises on a step failure)."""
    job = defs.resolve_job_def(family_job_name(key.path[-1]))
    partitions_def = defs.resolve_assets_def(key).partitions_def
    return job.execute_in_process(
        run_config={"ops": op_config, "loggers": {"console": {"config": {"log_level": "INFO"}}}},
        instance=instance,
        partition_key=partition,
        asset_selection=[key],
        tags={DEMO_TAG: "true", **partition_tags(partitions_def, partition), **worker_tags()},
        raise_on_error=False,
    )


def _materialize_plan(
    instance: dg.DagsterInstance, run_config: dict, only: dict, local: Path | None, started: float
) -> int:
    """One run per asset partition of the plan (see `launch`); stop at the first failure. Returns
    the exit code."""
    for key, partition in materialization_plan(defs, instance, only):
        label = key.to_user_string() + (f"[{partition}]" if partition else "")
        op_config = {key.path[-1]: run_config[key.path[-1]]} if key.path[-1] in run_config else {}
        t0 = time.monotonic()
        result = launch(instance, key, partition, op_config)
        status = "ok" if result.success else "FAILED"
        elapsed = time.monotonic() - t0
        print(f"[demo] {label:<40} {status} in {elapsed:5.1f}s  {result.job_def.name} run {result.run_id}", flush=True)
        if not result.success:
            for event in result.get_step_failure_events():
                print(event.step_failure_data.error.to_string() if event.step_failure_data.error else event.message)
            if local is None:
                print(
                    "[demo] hint: without hub access, point MATHDATA_DATA_DIR at a folder laid out like ../shared/data"
                )
            return 1
    storage = os.environ.get("MATHDATA_STORAGE", "storage")
    print(f"\n[demo] done in {time.monotonic() - started:.0f}s")
    print(
        f"[demo] tables (Parquet, readable with pyarrow.dataset): {Path(storage).resolve()}/<asset>/<partition>.parquet"
    )
    print(f"[demo] Dagster instance: {os.environ.get('DAGSTER_HOME')}")
    print("[demo] open the UI with `make ui`, then http://127.0.0.1:3000/asset-groups")
    return 0


if __name__ == "__main__":
    sys.exit(main())
