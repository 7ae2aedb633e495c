"""Jobs, schedules and sensors: weekly mixture rebuilds, new seed files flowing in, and the
executor and sensor that release killed runs (so a killed run never blocks the `gpu` pool)."""

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster import Executor

from mathdata_pipeline.common.partitions import mixture_specs, seed_sources, synthesis_shards
from mathdata_pipeline.common.processes import pid_alive_since, process_token, token_alive
from mathdata_pipeline.sources.readers import InputError
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.sources.seed_files import spec_for_seed_file

SOURCE_CHAIN = [
    "seed_problems",
    "augmented_questions",
    "augmented_responses",
    "question_pool",
    "difficulty_ledger",
    "rejection_samples",
    "solutions",
]

seed_source_job = dg.define_asset_job(
    "seed_source_job",
    selection=SOURCE_CHAIN,
    description="Everything one seed source feeds: seeds, MuggleMath, question pool, DART samples, solutions.",
)

SPEC_TAG = "mathdata/spec"

# One job per stage family: `make demo` and the schedules launch these, so the Runs page, the
# Overview timeline and each job's history say which stage ran (never `__ephemeral_asset_job__`).
# {job name: (assets, description)}; every asset of the code location is in exactly one.
FAMILIES: dict[str, tuple[list[str], str]] = {
    "sources_job": (
        ["seed_problems", "eval_benchmarks", "general_pool", "candidate_pool", "contamination_index"],
        "Seed problems of one source, the evaluation benchmarks, the general pool, the open candidate pool, "
        "and the contamination index built from the benchmarks.",
    ),
    "mugglemath_job": (
        ["augmented_questions", "augmented_responses"],
        "MuggleMath: augmented questions and their responses for one seed source.",
    ),
    "scalequest_job": (
        ["question_generator", "difficulty_scorer", "synthesized_questions", "synthesized_responses"],
        "ScaleQuest: the question generator and the difficulty scorer (unpartitioned), then synthesized "
        "questions and responses per shard.",
    ),
    "curation_job": (["question_pool", "solutions"], "The question pool and the solutions of one seed source."),
    "dart_job": (
        ["difficulty_ledger", "rejection_samples"],
        "DART-Math: the difficulty ledger and the rejection samples of one seed source.",
    ),
    "scores_job": (
        ["embeddings", "quality_scores"],
        "Embeddings and QaDS quality of every candidate (cached: only new rows cost anything).",
    ),
    "influence_job": (
        ["reference_responses", "gradient_features", "influence_scores"],
        "Influence pruning: reference responses, gradient features and influence scores of every solution.",
    ),
    "mixture_job": (["selections", "mixture"], "QaDS selection and the mixture of one spec."),
    "publish_job": (["published_mixture"], "Upload the export of one mixture spec to the Hub (off unless configured)."),
    "evaluation_job": (
        ["sft_model", "benchmark_scores"],
        "Fine-tune on one spec's mixture and score the model on the benchmarks.",
    ),
    "comparison_job": (["mixture_comparison"], "Compare the scored specs pair by pair."),
}
FAMILY_JOBS = {
    name: dg.define_asset_job(name, selection=assets, description=description)
    for name, (assets, description) in FAMILIES.items()
}
scores_job = FAMILY_JOBS["scores_job"]
mixture_job = FAMILY_JOBS["mixture_job"]
JOBS = [seed_source_job, *FAMILY_JOBS.values()]


def family_job_name(asset_name: str) -> str:
    """The name of the family job that launches `asset_name`; KeyError naming the asset when no
    family job selects it."""
    for name, (assets, _) in FAMILIES.items():
        if asset_name in assets:
            return name
    raise KeyError(f"asset {asset_name!r} is in no job of automation.FAMILIES: add it to its stage family's job")


def partition_tags(partitions_def: dg.PartitionsDefinition | None, partition_key: str | None) -> dict[str, str]:
    """Run tags that say what a run's partition is: `mathdata/spec` for a mixture spec,
    `mathdata/source` for a seed source, `mathdata/shard` for a ScaleQuest shard (Dagster adds its
    own `dagster/partition`). Empty for an unpartitioned run."""
    if partition_key is None or partitions_def is None:
        return {}
    if partitions_def == mixture_specs:
        return {SPEC_TAG: partition_key}
    if partitions_def == seed_sources:
        return {"mathdata/source": partition_key}
    if partitions_def == synthesis_shards:
        return {"mathdata/shard": partition_key}
    return {"mathdata/partition": partition_key}


weekly_scores = dg.ScheduleDefinition(
    name="weekly_scores",
    job=scores_job,
    cron_schedule="0 2 * * 1",
    execution_timezone="UTC",
    description="Mondays 02:00 UTC: embed and score candidates added during the week.",
)


@dg.schedule(
    name="weekly_mixtures",
    job=mixture_job,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    description="Mondays 04:00 UTC (after weekly_scores): rebuild every mixture spec.",
)
def weekly_mixtures(context: dg.ScheduleEvaluationContext):
    """One run per mixture spec, keyed by the scheduled time so a tick is never run twice, and
    tagged with its spec (`mathdata/spec`) so previews and the Runs page name it."""
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for name in mixture_specs.get_partition_keys():
        yield dg.RunRequest(
            run_key=f"{name}:{stamp}",
            partition_key=name,
            tags={"mathdata/trigger": "weekly", **partition_tags(mixture_specs, name)},
        )


def _signature(path: Path) -> str:
    """Size and modification time of a seed file and of its sidecar mapping: a change to either
    makes the file new again."""
    parts = []
    for candidate in (path, path.with_name(path.name + ".yaml")):
        if candidate.exists():
            stat = candidate.stat()
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def _load_cursor(cursor: str | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(seen {name: signature}, failed {name: [signature, message]}) from the sensor's cursor; an
    older cursor is a flat {name: signature}."""
    state = json.loads(cursor) if cursor else {}
    if "seen" not in state:
        return state, {}
    return state["seen"], state.get("failed", {})


@dg.sensor(
    name="seed_files_sensor",
    job=seed_source_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers configured seed sources as partitions, and turns every new or changed file "
    "in the seed folder (MATHDATA_SEED_DROP_DIR, default <data dir>/seeds) into a seed source "
    "that is materialized through the whole per-source chain. Files it cannot use are named in "
    "the tick: name collisions, names of configured sources, invalid names, undetectable fields.",
)
def seed_files_sensor(context: dg.SensorEvaluationContext, sources: DataSources):
    """Cursor: {"seen": {source name: signature}, "failed": {source name: [signature, message]}}.
    A file whose field mapping cannot be detected is skipped with a message naming the file (add
    `<file>.yaml` with the mapping) and not read again until it or its sidecar changes. Refused
    files (see `sources.seed_files.scan_seed_files`) are named in every tick's log and skip reason."""
    seen, failed = _load_cursor(context.cursor)
    known = set(context.instance.get_dynamic_partitions(seed_sources.name))
    add = sorted(set(sources.config().seed_sources) - known)
    drop = sources.seed_drop()
    runs, problems = [], [refusal.reason for refusal in drop.refused]
    for name, path in drop.files.items():
        signature = _signature(path)
        if seen.get(name) == signature:
            continue
        if name in failed and failed[name][0] == signature:
            problems.append(failed[name][1])
            continue
        try:
            spec_for_seed_file(path, sources.limits())
        except InputError as exc:
            failed[name] = [signature, str(exc)]
            problems.append(str(exc))
            continue
        failed.pop(name, None)
        if name not in known and name not in add:
            add.append(name)
        seen[name] = signature
        runs.append(
            dg.RunRequest(
                run_key=f"{name}:{signature}",
                partition_key=name,
                tags={"mathdata/trigger": "seed_file", **partition_tags(seed_sources, name)},
            )
        )
    for problem in problems:
        context.log.warning(f"seed file not used: {problem}")
    return dg.SensorResult(
        run_requests=runs,
        cursor=json.dumps({"seen": seen, "failed": failed}, sort_keys=True),
        dynamic_partitions_requests=[seed_sources.build_add_request(add)] if add else [],
        skip_reason=None if runs or add else dg.SkipReason("; ".join(problems) or "no new seed files"),
    )


# --- Killed runs ---------------------------------------------------------------------------------
# A run killed with SIGKILL (or whose machine went down) stays STARTED and keeps its `gpu` pool
# slot: every later LLM step would wait forever. Each run records the process that executes it
# (WORKER_TAG); the steps of a multiprocess run record theirs in their STEP_WORKER_STARTED events.
# A run whose processes are all gone is marked failed and its slots are freed by whichever comes
# first: the sensor below (when the daemon runs), any other run (at its start and every
# RELEASE_INTERVAL_S while it runs, whatever launched it), `make demo`, or `mathdata release-runs`.

WORKER_TAG = "mathdata/worker"
RELEASE_INTERVAL_S = 30.0
_ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def worker_tags() -> dict[str, str]:
    """Run tags that name this process as the run's worker (for runs executed in this process)."""
    return {WORKER_TAG: process_token()}


def mixture_spec_tags(spec: str) -> dict[str, str]:
    """The run tag that names a mixture spec, so the UI's run list filters by spec
    (`mathdata/spec:<name>`, as `partition_tags` gives it)."""
    return {SPEC_TAG: spec}


def start_tags(run: dg.DagsterRun) -> dict[str, str]:
    """Tags a run gets when it starts executing: its worker process, and for `mixture_job` its
    mixture spec (runs launched from the UI or a backfill carry only `dagster/partition` before)."""
    tags = worker_tags()
    if run.job_name == mixture_job.name and run.tags.get("dagster/partition"):
        tags.update(mixture_spec_tags(run.tags["dagster/partition"]))
    return tags


def _processes_alive(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool | None:
    """Whether any process of `run` still runs: its worker or a step worker of it (a step process
    outlives a killed multiprocess worker until its step ends). None when the run has no worker
    tag or ran on another host."""
    token = run.tags.get(WORKER_TAG)
    alive = token_alive(token) if token else None
    if alive is not False:
        return alive
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED):
        pid = record.dagster_event.event_specific_data.metadata.get("pid")
        if pid is not None and pid_alive_since(int(pid.value), record.timestamp):
            return True
    return False


def _slot_holders(instance: dg.DagsterInstance) -> set[str]:
    """Ids of the runs that hold a pool slot or wait for one."""
    storage = instance.event_log_storage
    holders = set(storage.get_concurrency_run_ids())
    for info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).values():
        holders.update(slot.run_id for slot in info.claimed_slots)
    return holders


def release_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    """Mark `run` failed (canceled when it was being canceled) unless it has ended, and free its
    pool slots and queued steps."""
    if run.status == dg.DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, reason)
    elif not run.is_finished:
        instance.report_run_failed(run, reason)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def release_killed_runs(instance: dg.DagsterInstance) -> list[str]:
    """Release every run (active, or holding pool slots) whose processes on this host are all gone;
    returns their ids. Runs without a worker tag or from another host are left to Dagster's run
    monitoring (and to `mathdata release-runs --run ID`)."""
    runs = {run.run_id: run for run in instance.get_runs(filters=dg.RunsFilter(statuses=_ACTIVE))}
    for run_id in _slot_holders(instance) - set(runs):
        if (run := instance.get_run_by_id(run_id)) is not None:
            runs[run_id] = run
    released = []
    for run in runs.values():
        if _processes_alive(instance, run) is False:
            host = run.tags[WORKER_TAG].split("|")[0]
            release_run(
                instance, run, f"every process of this run on {host} is gone (killed?); its pool slots are freed"
            )
            released.append(run.run_id)
    return released


@contextmanager
def releasing_killed_runs(instance: dg.DagsterInstance) -> Iterator[None]:
    """While the block runs, release killed runs now and every RELEASE_INTERVAL_S seconds
    (`MATHDATA_RELEASE_INTERVAL_S` overrides), in a background thread."""
    interval = float(os.environ.get("MATHDATA_RELEASE_INTERVAL_S") or RELEASE_INTERVAL_S)
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                release_killed_runs(instance)
            except Exception as exc:  # e.g. the storage busy for a moment: try again next interval
                logging.getLogger(__name__).warning(f"releasing killed runs failed, retrying later: {exc}")
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="release-killed-runs", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _ReleasingExecutor(Executor):
    """Dagster's default executor (multiprocess, or in-process by config) that also tags the run
    with its worker process and releases killed runs while it executes."""

    def __init__(self, inner: Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        plan_context.instance.add_run_tags(plan_context.run_id, start_tags(plan_context.dagster_run))
        with releasing_killed_runs(plan_context.instance):
            yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="mathdata_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema,
    requirements=dg.multi_or_in_process_executor.get_requirements,
)
def mathdata_executor(init_context: dg.InitExecutorContext) -> Executor:
    """`multi_or_in_process_executor` (same config) plus run hygiene: every run launched from the
    UI, the daemon, a schedule or the dagster CLI records its worker process and releases killed
    runs while it runs, so a killed run never blocks the `gpu` pool for long."""
    return _ReleasingExecutor(dg.multi_or_in_process_executor.executor_creation_fn(init_context))


@dg.sensor(
    name="release_killed_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose processes were killed as failed and frees their pool slots "
    "(without it a killed run keeps its `gpu` slot and every later LLM step waits forever).",
)
def release_killed_runs_sensor(context: dg.SensorEvaluationContext):
    """Release killed runs (see `release_killed_runs`); the tick says which."""
    released = release_killed_runs(context.instance)
    return dg.SkipReason(f"released killed runs: {', '.join(released)}" if released else "no killed runs")


def release_runs_now(run_ids: Sequence[str] = ()) -> list[str]:
    """For `mathdata release-runs`: in the instance at DAGSTER_HOME, release every killed run, and
    the runs `run_ids` whatever their state (for runs of another host or without a worker tag;
    only for runs known to be dead). Returns the released run ids; ValueError for an unknown id
    or when DAGSTER_HOME is not set."""
    if not os.environ.get("DAGSTER_HOME"):
        raise ValueError("DAGSTER_HOME is not set (make sets it to .dagster_home)")
    with dg.DagsterInstance.get() as instance:
        released = release_killed_runs(instance)
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            if run is None:
                raise ValueError(f"no run {run_id!r} in the instance at {os.environ['DAGSTER_HOME']}")
            release_run(instance, run, "released by `mathdata release-runs --run`")
            released.append(run_id)
    return released
