"""Decontamination: the `contamination_index` asset."""

import dagster as dg
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, table_metadata
from mathdata_pipeline.decontamination.index import build_index
from mathdata_pipeline.storage.resources import TableStore


class ContaminationIndexConfig(dg.Config):
    """n-gram settings of the index; checks read them back from the index table."""

    n: int = Field(default=13, ge=3, description="word n-gram length of the overlap check")
    short_n: int = Field(default=8, ge=3, description="n-gram length for questions shorter than n words")


@dg.asset(deps=["eval_benchmarks"], group_name="evaluation", kinds={"parquet"})
def contamination_index(
    context: dg.AssetExecutionContext, config: ContaminationIndexConfig, store: TableStore
) -> dg.MaterializeResult:
    """Hashes of every benchmark question (exact normalized text and word n-grams) that tables
    reaching a mixture are checked against."""
    benchmarks = store.read("eval_benchmarks", columns=["benchmark", "problem_id", "question"])
    items = zip(*(benchmarks.column(c).to_pylist() for c in ("benchmark", "problem_id", "question")))
    index = build_index(items, n=config.n, short_n=config.short_n)
    path = store.write(index, "contamination_index")
    context.log.info(f"indexed {benchmarks.num_rows} benchmark questions into {index.num_rows} hashes")
    return dg.MaterializeResult(
        metadata={**table_metadata(index, path), **counts_metadata({"benchmark_questions": benchmarks.num_rows})}
    )
