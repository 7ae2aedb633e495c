"""Decontamination: the `contamination_index` asset and the reusable in-asset check."""

import warnings

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.metadata import markdown_table
from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.storage.resources import TableStore

CHECK_NAME = "no_benchmark_overlap"
AUDIT_PREFIX = "contamination_audit"


def partitioned_check_spec(
    name: str, *, asset: str, partitions_def: dg.PartitionsDefinition | None, **kwargs
) -> dg.AssetCheckSpec:
    """An AssetCheckSpec whose results carry the asset's partition (`partitions_def`, the asset's
    own; None for an unpartitioned asset). Other keyword arguments go to AssetCheckSpec. Dagster
    1.13 marks partitioned checks as a preview feature: only that warning is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
        )
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions_def, **kwargs)


def contamination_check_spec(
    asset_key: str, *, blocking: bool, partitions_def: dg.PartitionsDefinition | None = None
) -> dg.AssetCheckSpec:
    """The check spec to declare on an asset whose rows must not overlap a benchmark; pass the
    asset's `partitions_def` so each result belongs to the partition it judged."""
    where = f"`{AUDIT_PREFIX}/{asset_key}/" + ("<partition>.parquet`" if partitions_def else "all.parquet`")
    return partitioned_check_spec(
        CHECK_NAME,
        asset=asset_key,
        partitions_def=partitions_def,
        blocking=blocking,
        additional_deps=["contamination_index"],
        description="No row overlaps a benchmark question (exact text or word n-grams); "
        f"matches are written to {where} for review.",
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
    when no row overlaps; its description names the asset, partition and benchmarks, its metadata
    holds the counts, the rows per benchmark as a table and the audit table's path.
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
        description=overlap_description(
            asset_key, partition, summary["contaminated_rows"], by_benchmark, table.num_rows
        ),
        metadata={
            "partition": partition or "(unpartitioned)",
            "total_rows": summary["total_rows"],
            "contaminated_rows": summary["contaminated_rows"],
            "exact_rows": summary["exact_rows"],
            "contaminated_share": round(summary["contaminated_share"], 4),
            "by_benchmark": dg.MetadataValue.md(
                markdown_table({b: {"overlapping rows": n} for b, n in by_benchmark.items()}, "benchmark")
                if by_benchmark
                else "no overlap with any benchmark"
            ),
            "audit_path": dg.MetadataValue.path(str(audit_path)),
        },
    )


def overlap_description(
    asset_key: str, partition: str | None, contaminated: int, by_benchmark: dict[str, int], total: int
) -> str:
    """One line naming what was checked and what overlapped, e.g. "seed_problems[gsm8k]: 3 of 7473
    rows overlap a benchmark (gsm8k_test 3)"."""
    where = f"{asset_key}[{partition}]" if partition else asset_key
    benchmarks = ", ".join(f"{name} {count}" for name, count in by_benchmark.items())
    return f"{where}: {contaminated} of {total} rows overlap a benchmark" + (f" ({benchmarks})" if benchmarks else "")
