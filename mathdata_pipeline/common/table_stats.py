"""Descriptions of a table for people: a markdown preview and simple per-column statistics."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc


def display_number(value: float | int) -> str:
    """A number as people read it: floats to 4 significant digits (a float32 0.7 shows as 0.7, not
    0.699999988079071), whole numbers in full, infinity as ∞ and NaN as "NaN". Full precision stays
    in the tables; this is for metadata only."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"


def _cell(value: object, width: int) -> str:
    text = display_number(value) if isinstance(value, float) else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown_preview(table: pa.Table, *, rows: int = 5, width: int = 60) -> str:
    """The first `rows` rows of `table` as a markdown table, each cell cut to `width` characters."""
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in table.slice(0, rows).to_pylist():
        lines.append("| " + " | ".join(_cell(row[n], width) for n in names) + " |")
    return "\n".join(lines)


def column_stats(table: pa.Table) -> dict[str, dict[str, float | int | str]]:
    """Per-column statistics: nulls for every column; min/max/mean for numbers; mean and max
    length for strings; distinct values for strings and booleans (exact, on the whole column).
    """
    stats: dict[str, dict[str, float | int | str]] = {}
    for name in table.column_names:
        column = table.column(name)
        entry: dict[str, float | int | str] = {"nulls": column.null_count}
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            if column.null_count < len(column):
                minmax = pc.min_max(column)
                entry.update(
                    min=minmax["min"].as_py(), max=minmax["max"].as_py(), mean=round(pc.mean(column).as_py(), 4)
                )
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            lengths = pc.utf8_length(column)
            if column.null_count < len(column):
                entry.update(mean_length=round(pc.mean(lengths).as_py(), 1), max_length=pc.max(lengths).as_py())
            entry["distinct"] = pc.count_distinct(column).as_py()
        elif pa.types.is_boolean(kind):
            entry["true"] = pc.sum(column).as_py() or 0
        stats[name] = entry
    return stats


def markdown_column_stats(table: pa.Table) -> str:
    """`column_stats` as a markdown table (one row per column)."""
    stats = column_stats(table)
    keys = ["nulls", "distinct", "min", "max", "mean", "mean_length", "max_length", "true"]
    used = [k for k in keys if any(k in s for s in stats.values())]
    lines = ["| column | type | " + " | ".join(used) + " |", "|---|---|" + "---|" * len(used)]
    for field in table.schema:
        s = stats[field.name]
        lines.append(
            f"| {field.name} | {field.type} | " + " | ".join(display_number(s.get(k, "")) for k in used) + " |"
        )
    return "\n".join(lines)
