"""Jobs, schedules and sensors: weekly mixture rebuilds, and new seed files flowing in."""

import json
from pathlib import Path

import dagster as dg

from mathdata_pipeline.common.partitions import mixture_specs, seed_sources
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
    partitions_def=seed_sources,
    description="Everything one seed source feeds: seeds, MuggleMath, question pool, DART samples, solutions.",
)
scores_job = dg.define_asset_job(
    "scores_job",
    selection=["embeddings", "quality_scores"],
    description="Embeddings and QaDS quality of every candidate (cached: only new rows cost anything).",
)
mixture_job = dg.define_asset_job(
    "mixture_job",
    selection=["selections", "mixture"],
    partitions_def=mixture_specs,
    description="QaDS selection and the mixture of one spec.",
)

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
    """One run per mixture spec, keyed by the scheduled time so a tick is never run twice."""
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for name in mixture_specs.get_partition_keys():
        yield dg.RunRequest(run_key=f"{name}:{stamp}", partition_key=name, tags={"mathdata/trigger": "weekly"})


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
            dg.RunRequest(run_key=f"{name}:{signature}", partition_key=name, tags={"mathdata/trigger": "seed_file"})
        )
    for problem in problems:
        context.log.warning(f"seed file not used: {problem}")
    return dg.SensorResult(
        run_requests=runs,
        cursor=json.dumps({"seen": seen, "failed": failed}, sort_keys=True),
        dynamic_partitions_requests=[seed_sources.build_add_request(add)] if add else [],
        skip_reason=None if runs or add else dg.SkipReason("; ".join(problems) or "no new seed files"),
    )
