"""Materialization metadata every table reports (row count, schema, preview, column statistics),
and which run wrote a table."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.columns import column_description
from mathdata_pipeline.common.table_stats import display_number, markdown_column_stats, markdown_preview
from mathdata_pipeline.engines.runner import GenerationStats


def table_metadata(table: pa.Table, path: Any) -> dict[str, Any]:
    """Dagster metadata for a written table: `dagster/row_count`, `dagster/column_schema`, the
    path, a markdown preview of a few rows and per-column statistics. Each column of the schema
    carries its description from `common.columns.COLUMN_DESCRIPTIONS`."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type), description=column_description(f.name)) for f in table.schema]
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(table.num_rows),
        "dagster/column_schema": schema,
        "path": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(markdown_preview(table)),
        "column_stats": dg.MetadataValue.md(markdown_column_stats(table)),
    }


def counts_metadata(counts: dict[str, int]) -> dict[str, Any]:
    """Integer counters (rows read, dropped by reason, …) as Dagster int metadata."""
    return {key: dg.MetadataValue.int(int(value)) for key, value in counts.items()}


def generation_metadata(stats: GenerationStats) -> dict[str, Any]:
    """The LLM metadata keys of CONVENTIONS.md (requests, cache_hits, errors, prompt_tokens,
    completion_tokens, tokens_per_second, wall_seconds) and the ledger's (retries, ledger_rows,
    ledger_warning as text when there is one) from a `GenerationStats`."""
    values = stats.as_metadata()
    return {
        key: dg.MetadataValue.text(v)
        if isinstance(v, str)
        else (dg.MetadataValue.float(float(v)) if isinstance(v, float) else dg.MetadataValue.int(int(v)))
        for key, v in values.items()
    }


def markdown_table(rows: dict[str, dict[str, Any]], key_label: str) -> str:
    """A {row label: {column: value}} breakdown (per difficulty bin, per level, …) as a markdown
    table; numbers are shown by `table_stats.display_number`, None shows as an empty cell."""
    columns = list(dict.fromkeys(column for values in rows.values() for column in values))
    lines = [f"| {key_label} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, values in rows.items():
        cells = [_display(values.get(column)) for column in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _display(value: Any) -> str:
    return "" if value is None else display_number(value)


def materialization_run(instance: dg.DagsterInstance, asset: str, partition: str | None) -> dict[str, Any] | None:
    """The run that wrote the current table of `asset` (slash-separated key) and `partition` (None:
    unpartitioned): {"run_id", "job", "materialized_at" (ISO 8601, UTC)} of its latest
    materialization in `instance`, or None when the instance has none."""
    key = dg.AssetKey(asset.split("/"))
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    run = instance.get_run_by_id(record.run_id)
    return {
        "run_id": record.run_id,
        "job": run.job_name if run else None,
        "materialized_at": datetime.fromtimestamp(record.timestamp, tz=UTC).isoformat(timespec="seconds"),
    }


def instance_run_lookup() -> Callable[[str, str | None], dict[str, Any] | None] | None:
    """`materialization_run` bound to the Dagster instance at `DAGSTER_HOME`, for `mathdata trace`;
    None when `DAGSTER_HOME` is not set (no instance to ask)."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    instance = dg.DagsterInstance.get()
    return lambda asset, partition: materialization_run(instance, asset, partition)
