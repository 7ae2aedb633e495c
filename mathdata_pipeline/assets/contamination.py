"""Decontamination: the `contamination_index` asset and the reusable in-asset check."""

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.assets.metadata import counts_metadata, table_metadata
from mathdata_pipeline.methods.decontamination import ContaminationIndex, build_index
from mathdata_pipeline.resources.table_store import TableStore

CHECK_NAME = "no_benchmark_overlap"
AUDIT_PREFIX = "contamination_audit"


class ContaminationIndexConfig(dg.Config):
    """n-gram settings of the index; checks read them back from the index table."""

    n: int = 13
    short_n: int = 8


@dg.asset(deps=["eval_benchmarks"], group_name="evaluation", kinds={"parquet"})
def contamination_index(context: dg.AssetExecutionContext, config: ContaminationIndexConfig,
                        store: TableStore) -> dg.MaterializeResult:
    """Hashes of every benchmark question (exact normalized text and word n-grams) that tables
    reaching a mixture are checked against."""
    benchmarks = store.read("eval_benchmarks", columns=["benchmark", "problem_id", "question"])
    items = zip(*(benchmarks.column(c).to_pylist() for c in ("benchmark", "problem_id", "question")))
    index = build_index(items, n=config.n, short_n=config.short_n)
    path = store.write(index, "contamination_index")
    context.log.info(f"indexed {benchmarks.num_rows} benchmark questions into {index.num_rows} hashes")
    return dg.MaterializeResult(metadata={**table_metadata(index, path),
                                          **counts_metadata({"benchmark_questions": benchmarks.num_rows})})


def contamination_check_spec(asset_key: str, *, blocking: bool) -> dg.AssetCheckSpec:
    """The check spec to declare on an asset whose rows must not overlap a benchmark."""
    return dg.AssetCheckSpec(CHECK_NAME, asset=asset_key, blocking=blocking, additional_deps=["contamination_index"],
                             description="No row overlaps a benchmark question (exact text or word n-grams); "
                                         f"matches are written to {AUDIT_PREFIX}/<asset>/<partition> for review.")


def contamination_check(store: TableStore, table: pa.Table, *, asset_key: str, partition: str | None,
                        id_column: str, text_column: str,
                        severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    """Check `table` against the stored `contamination_index` and write the audit table.

    Inputs: the table store; the rows just written; their asset key and partition; which column
    holds the row id and which the text; the severity of a failure (ERROR for tables that feed a
    mixture, WARN where overlap is only reported). Output: an AssetCheckResult that passes only
    when no row overlaps, with counts per benchmark and the audit table's path as metadata.
    """
    index = ContaminationIndex.from_table(store.read("contamination_index"))
    rows = zip(table.column(id_column).to_pylist(), table.column(text_column).to_pylist())
    audit = index.find_matches(rows)
    audit_path = store.write(audit, f"{AUDIT_PREFIX}/{asset_key}", partition)
    summary = ContaminationIndex.summarize(audit, table.num_rows)
    by_benchmark = summary.pop("by_benchmark", {})
    return dg.AssetCheckResult(
        check_name=CHECK_NAME, asset_key=asset_key, passed=summary["contaminated_rows"] == 0, severity=severity,
        description=f"{summary['contaminated_rows']} of {table.num_rows} rows overlap a benchmark",
        metadata={**{k: v for k, v in summary.items() if isinstance(v, (int, float))},
                  "by_benchmark": dg.MetadataValue.json(by_benchmark),
                  "audit_path": dg.MetadataValue.path(str(audit_path))},
    )
