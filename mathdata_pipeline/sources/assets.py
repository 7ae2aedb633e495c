"""Seed pools: `seed_problems` per source, `eval_benchmarks`, `general_pool`."""

import dagster as dg
import pyarrow as pa
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, table_metadata
from mathdata_pipeline.common.partitions import seed_sources
from mathdata_pipeline.decontamination.checks import contamination_check, contamination_check_spec
from mathdata_pipeline.sources.config import open_source
from mathdata_pipeline.sources.general import build_general_rows
from mathdata_pipeline.sources.problems import build_problems
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore


class SeedConfig(dg.Config):
    """What to do with valid rows that have no reference answer (always counted in metadata)."""

    keep_missing_answers: bool = Field(
        default=True, description="keep valid rows without a reference answer (counted either way)"
    )


@dg.asset(
    partitions_def=seed_sources,
    group_name="seeds",
    kinds={"parquet"},
    deps=["contamination_index"],
    check_specs=[contamination_check_spec("seed_problems", blocking=False, partitions_def=seed_sources)],
)
def seed_problems(
    context: dg.AssetExecutionContext, config: SeedConfig, store: TableStore, sources: DataSources
) -> dg.MaterializeResult:
    """Whole seed files of one source as problem rows with extracted reference answers.

    The overlap check with the benchmarks only warns here (train/test overlap is reported, and the
    stages that build training data drop those rows); it fails hard on mixtures.
    """
    source = context.partition_key
    spec = sources.seed_spec(source)
    label, records = open_source(spec, base=sources.base(), limits=sources.limits())
    if refused := sources.refused_seed_files(source):
        context.log.warning("; ".join(refused))
    table, stats = build_problems(
        records, spec, source=source, label=label, keep_missing_answers=config.keep_missing_answers
    )
    # The check reads the stored contamination_index first: without one the step fails before any
    # seed table is written, so no table is left behind by a failed materialization.
    check = contamination_check(
        store,
        table,
        asset_key="seed_problems",
        partition=source,
        id_column="problem_id",
        text_column="question",
        severity=dg.AssetCheckSeverity.WARN,
    )
    path = store.write(table, "seed_problems", source)
    refused_metadata = {"refused_seed_files": dg.MetadataValue.json(refused)} if refused else {}
    return dg.MaterializeResult(
        metadata={**table_metadata(table, path), **counts_metadata(stats.as_dict()), **refused_metadata},
        check_results=[check],
    )


@dg.asset(group_name="evaluation", kinds={"parquet"})
def eval_benchmarks(context: dg.AssetExecutionContext, store: TableStore, sources: DataSources) -> dg.MaterializeResult:
    """The evaluation sets (GSM8K, MATH, MATH-500, CollegeMath, DeepMind Mathematics,
    OlympiadBench, TheoremQA) in the problem schema, with a `benchmark` column."""
    tables, counts = [], {}
    for name, spec in sources.config().benchmarks.items():
        label, records = open_source(spec, base=sources.base(), limits=sources.limits())
        table, stats = build_problems(records, spec, source=name, label=label)
        tables.append(table.append_column("benchmark", pa.array([name] * table.num_rows, pa.string())))
        counts.update({f"{name}/{key}": value for key, value in stats.as_dict().items() if value})
    table = pa.concat_tables(tables)
    path = store.write(table, "eval_benchmarks")
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **counts_metadata(counts)})


@dg.asset(group_name="seeds", kinds={"parquet"})
def general_pool(context: dg.AssetExecutionContext, store: TableStore, sources: DataSources) -> dg.MaterializeResult:
    """General instruction data as chat `messages` with license, for the general side of mixtures."""
    tables, counts = [], {}
    for name, spec in sources.config().general_sets.items():
        label, records = open_source(spec, base=sources.base(), limits=sources.limits())
        table, stats = build_general_rows(records, fmt=spec.format, source=name, label=label, license=spec.license)
        tables.append(table)
        counts.update({f"{name}/{key}": value for key, value in stats.items() if value})
    table = pa.concat_tables(tables)
    path = store.write(table, "general_pool")
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **counts_metadata(counts)})
