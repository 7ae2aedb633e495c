"""`make demo`: materialize the whole asset graph with the demo configuration, then say where
everything is.

Runs go into the persistent instance under `DAGSTER_HOME`, so `make ui` shows every
materialization, its metadata and its lineage afterwards. Run config for each asset comes from
`configs/demo.yaml` (`ops: {asset_name: {config: …}}`) when that file names the asset.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from graphlib import TopologicalSorter
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import CodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origins_from_yaml_paths

from mathdata_pipeline.automation import (
    family_job_name,
    partition_tags,
    release_killed_runs,
    releasing_killed_runs,
    worker_tags,
)
from mathdata_pipeline.common.partitions import register_seed_sources
from mathdata_pipeline.common.paths import REPO_ROOT, config_dir
from mathdata_pipeline.definitions import defs
from mathdata_pipeline.run_config import check_run_config_file
from mathdata_pipeline.sources.config import data_dir
from mathdata_pipeline.storage.resources import TableStore


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
    partitions per asset; `demo-relaxed.yaml`: what is relaxed per asset), empty when the file does
    not exist."""
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


DEMO_TAG = "mathdata/demo"
RELAXED_TAG = "mathdata/demo_relaxed"


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


WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"
DEFINITIONS_MODULE = "mathdata_pipeline.definitions"


@functools.cache
def _code_location_origin() -> CodeLocationOrigin:
    """The origin of the code location that loads `mathdata_pipeline.definitions` in `workspace.yaml`,
    exactly as `make ui` (`dagster dev -w workspace.yaml`) builds it from that file, so runs created
    with it belong to that code location. ValueError naming the file when no location loads it."""
    for origin in location_origins_from_yaml_paths([str(WORKSPACE_FILE)]):
        target = getattr(origin, "loadable_target_origin", None)
        if target is not None and target.module_name == DEFINITIONS_MODULE:
            return origin
    raise ValueError(f"{WORKSPACE_FILE}: no code location loads the module {DEFINITIONS_MODULE}")


def job_origins(job_name: str) -> tuple[RemoteJobOrigin, JobPythonOrigin]:
    """The origins a run of `job_name` gets when the UI or the daemon launches it: the remote one
    (code location of `workspace.yaml`, repository of `defs`, job), which the Runs page, the
    Overview timeline and the job's history group runs by, and the Python one (module
    `mathdata_pipeline.definitions`, attribute `defs`, this interpreter) that reloads the job."""
    repository = RemoteRepositoryOrigin(_code_location_origin(), SINGLETON_REPOSITORY_NAME)
    code = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", str(REPO_ROOT)).get_python_origin()
    return RemoteJobOrigin(repository, job_name), JobPythonOrigin(job_name, code)


def launch(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, op_config: dict, relaxed: str = ""
) -> dg.JobExecutionResult:
    """Materialize one asset partition as a run of its stage-family job (`automation.FAMILIES`),
    in this process, tagged as a demo run with its partition (`mathdata/spec`, `mathdata/source`,
    `mathdata/shard`) and with this process as its worker. The run carries the job's origins in the
    code location of `workspace.yaml` (`job_origins`), so the UI shows it under its job (timeline,
    job history) like a run launched from the UI. `op_config` is {asset name: {config}} or empty;
    `relaxed`, what the demo relaxes for this asset (`demo-relaxed.yaml`): tagged
    `mathdata/demo_relaxed` and, after a success, recorded as an observation of the asset partition
    with metadata `demo_relaxed`. Returns Dagster's result (never raises on a step failure)."""
    job = defs.resolve_job_def(family_job_name(key.path[-1]))
    partitions_def = defs.resolve_assets_def(key).partitions_def
    run_config = {"ops": op_config, "loggers": {"console": {"config": {"log_level": "INFO"}}}}
    tags = {DEMO_TAG: "true", **partition_tags(partitions_def, partition), **worker_tags()}
    tags = merge_run_tags(job, partition, {**tags, RELAXED_TAG: relaxed} if relaxed else tags, [key], instance, None)
    in_process = job.as_ephemeral_job(resource_defs={}, input_values={})  # what `execute_in_process` runs
    remote_origin, code_origin = job_origins(job.name)
    run = instance.create_run_for_job(
        in_process,
        run_config=run_config,
        tags=tags,
        asset_selection={key},
        remote_job_origin=remote_origin,
        job_code_origin=code_origin,
    )
    result = execute_run(InMemoryJob(in_process), run, instance)
    if relaxed and result.success:
        note = {"demo_relaxed": dg.MetadataValue.text(relaxed)}
        instance.report_runless_asset_event(dg.AssetObservation(asset_key=key, partition=partition, metadata=note))
    return result


GENERATING_METHODS = ("dart", "mugglemath", "scalequest")
SUMMARY_SPECS = ["openmathmix", "openmathmix-pruned"]  # the mixtures the demo's last lines describe


def mixture_summary(store: TableStore, specs: list[str]) -> list[str]:
    """Lines saying what the mixtures of `specs` hold: rows by origin, the generated rows by method
    (DART rows have origin `seed`, so only the method tells them apart) with one row id of each to
    pass to `mathdata trace`, and the rows the spec pruned by influence. Specs without a table are
    skipped."""
    solutions = store.read_all_if_exists("solutions", columns=["sample_id", "method"])
    method_of = dict(zip(*(c.to_pylist() for c in solutions.columns))) if solutions is not None else {}
    lines = []
    for spec in specs:
        mixture = store.read_if_exists("mixture", spec, columns=["row_id", "origin", "sample_id"])
        if mixture is None:
            continue
        by_origin = {c["values"]: c["counts"] for c in pc.value_counts(mixture.column("origin")).to_pylist()}
        example: dict[str, str] = {}
        counts = dict.fromkeys(GENERATING_METHODS, 0)
        for row_id, sample_id in zip(mixture.column("row_id").to_pylist(), mixture.column("sample_id").to_pylist()):
            method = method_of.get(sample_id)
            if method in counts:
                counts[method] += 1
                example.setdefault(method, row_id)
        lines.append(f"mixture {spec}: {mixture.num_rows} rows, by_origin {dict(sorted(by_origin.items()))}")
        lines.append(f"  generated rows by method: {counts}")
        lines += [f"  trace a {method} row: mathdata trace {row_id}" for method, row_id in example.items()]
        lines += _pruned_line(store, spec)
    return lines


def _pruned_line(store: TableStore, spec: str) -> list[str]:
    """'pruned by influence: N rows' for a spec whose selections pruned rows (none otherwise)."""
    selections = store.read_if_exists("selections", spec, columns=["decision"])
    if selections is None:
        return []
    pruned = sum(1 for d in selections.column("decision").to_pylist() if d and d.startswith("pruned"))
    return [f"  pruned by influence: {pruned} rows"] if pruned else []


def _materialize_plan(
    instance: dg.DagsterInstance, run_config: dict, only: dict, local: Path | None, started: float
) -> int:
    """One run per asset partition of the plan (see `launch`); stop at the first failure. Returns
    the exit code."""
    timings: dict[str, float] = {}
    relaxed = demo_run_config(config_dir() / "demo-relaxed.yaml")
    for key, partition in materialization_plan(defs, instance, only):
        label = key.to_user_string() + (f"[{partition}]" if partition else "")
        op_config = {key.path[-1]: run_config[key.path[-1]]} if key.path[-1] in run_config else {}
        t0 = time.monotonic()
        result = launch(instance, key, partition, op_config, relaxed.get(key.path[-1], ""))
        status = "ok" if result.success else "FAILED"
        elapsed = time.monotonic() - t0
        timings[label] = elapsed
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
    print(f"\n[demo] done in {time.monotonic() - started:.0f}s; slowest steps:")
    for label, seconds in sorted(timings.items(), key=lambda item: -item[1])[:6]:
        print(f"[demo]   {label:<40} {seconds:5.1f}s")
    for line in mixture_summary(TableStore(root=storage), SUMMARY_SPECS):
        print(f"[demo] {line}")
    print(
        f"[demo] tables (Parquet, readable with pyarrow.dataset): {Path(storage).resolve()}/<asset>/<partition>.parquet"
    )
    print(f"[demo] Dagster instance: {os.environ.get('DAGSTER_HOME')}")
    print("[demo] open the UI with `make ui`, then http://127.0.0.1:3000/asset-groups")
    return 0


if __name__ == "__main__":
    sys.exit(main())
