"""Decontamination: the `contamination_index` asset and the reusable in-asset check."""

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.storage.resources import TableStore

CHECK_NAME = "no_benchmark_overlap"
AUDIT_PREFIX = "contamination_audit"


def contamination_check_spec(asset_key: str, *, blocking: bool) -> dg.AssetCheckSpec:
    """The check spec to declare on an asset whose rows must not overlap a benchmark."""
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=asset_key,
        blocking=blocking,
        additional_deps=["contamination_index"],
        description="No row overlaps a benchmark question (exact text or word n-grams); "
        f"matches are written to {AUDIT_PREFIX}/<asset>/<partition> for review.",
    )


def contamination_check(
    store: TableStore,
    table: pa.Table,
    *,
    asset_key: str,
    partition: str | None,
    id_column: str,
    text_column: str,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
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
        check_name=CHECK_NAME,
        asset_key=asset_key,
        passed=summary["contaminated_rows"] == 0,
        severity=severity,
        description=f"{summary['contaminated_rows']} of {table.num_rows} rows overlap a benchmark",
        metadata={
            **{k: v for k, v in summary.items() if isinstance(v, (int, float))},
            "by_benchmark": dg.MetadataValue.json(by_benchmark),
            "audit_path": dg.MetadataValue.path(str(audit_path)),
        },
    )
