"""Where the methods meet: `question_pool` (seeds + augmented + synthesized questions) and
`solutions` (curated question–response pairs of every method)."""

import dagster as dg
import pyarrow.compute as pc

from mathdata_pipeline.common.metadata import counts_metadata, table_metadata
from mathdata_pipeline.common.partitions import seed_sources
from mathdata_pipeline.curation.question_pool import build_question_pool, rows_of_source
from mathdata_pipeline.curation.solutions import SAMPLE_COLUMNS, kept_dart_samples, solution_rows
from mathdata_pipeline.decontamination.checks import contamination_check, contamination_check_spec
from mathdata_pipeline.storage.resources import TableStore


@dg.asset(
    partitions_def=seed_sources,
    group_name="solutions",
    kinds={"parquet"},
    deps=[
        "seed_problems",
        "augmented_questions",
        "augmented_responses",
        "contamination_index",
        dg.AssetDep("synthesized_questions", partition_mapping=dg.AllPartitionMapping()),
    ],
    check_specs=[contamination_check_spec("question_pool", blocking=True, partitions_def=seed_sources)],
)
def question_pool(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Seeds plus augmented and synthesized questions of one source: deduplicated, with
    provenance, and without any question that overlaps a benchmark. What rejection sampling reads."""
    source = context.partition_key
    parts = {
        name: store.read_if_exists(name, source)
        for name in ("seed_problems", "augmented_questions", "augmented_responses")
    }
    parts["synthesized_questions"] = rows_of_source(store.read_all_if_exists("synthesized_questions"), source)
    table, dropped = build_question_pool(
        {k: v for k, v in parts.items() if v is not None}, store.read("contamination_index")
    )
    path = store.write(table, "question_pool", source)
    check = contamination_check(
        store, table, asset_key="question_pool", partition=source, id_column="problem_id", text_column="question"
    )
    origins = pc.value_counts(table.column("origin")).to_pylist() if table.num_rows else []
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata(dropped),
            **counts_metadata({f"origin/{o['values']}": o["counts"] for o in origins}),
        },
        check_results=[check],
    )


@dg.asset(
    partitions_def=seed_sources,
    group_name="solutions",
    kinds={"parquet"},
    deps=[
        "rejection_samples",
        "augmented_responses",
        "question_pool",
        dg.AssetDep("synthesized_responses", partition_mapping=dg.AllPartitionMapping()),
    ],
)
def solutions(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Curated question–solution pairs of one source: the first `target` correct DARS samples per
    question, the kept MuggleMath and ScaleQuest responses, and the seed reference solutions, each
    with its origin. Reads only the columns and rows it keeps."""
    source, columns = context.partition_key, [*SAMPLE_COLUMNS, "kept"]
    dart = None
    if store.exists("rejection_samples", source):
        with store.path_for("rejection_samples", source).open("rb") as fh:
            dart = kept_dart_samples(fh)
    table, counts = solution_rows(
        store.read("question_pool", source),
        dart,
        store.read_if_exists("augmented_responses", source, columns=columns),
        rows_of_source(store.read_all_if_exists("synthesized_responses", columns=columns), source),
    )
    path = store.write(table, "solutions", source)
    origins = pc.value_counts(table.column("origin")).to_pylist() if table.num_rows else []
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata(counts),
            **counts_metadata({f"origin/{o['values']}": o["counts"] for o in origins}),
        }
    )
