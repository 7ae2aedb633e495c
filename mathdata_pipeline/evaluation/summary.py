"""Summaries of a per-item score table with 95% intervals: accuracy (Wilson score interval) and
mean log-probability per token (normal approximation over items), per model and per group
(benchmark, MATH level, MATH subject)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa

Z95 = 1.959964


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `correct / total`; (nan, nan) when total is 0."""
    if total == 0:
        return math.nan, math.nan
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the mean with a normal-approximation interval; nan where undefined."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = z * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def measures(rows: list[dict]) -> dict[str, float | int]:
    """Accuracy and mean log-probability of item rows (ITEM_SCHEMA dicts) with their intervals:
    `accuracy_items` (graded answers), `accuracy`, `accuracy_low/high`, `logprob_items`,
    `mean_logprob`, `mean_logprob_low/high`."""
    graded = [r["correct"] for r in rows if r["correct"] is not None]
    low, high = wilson_interval(sum(graded), len(graded))
    logprobs = np.asarray([r["mean_logprob"] for r in rows if r["mean_logprob"] is not None], dtype=np.float64)
    mean, lp_low, lp_high = mean_interval(logprobs)
    return {
        "accuracy_items": len(graded),
        "accuracy": sum(graded) / len(graded) if graded else math.nan,
        "accuracy_low": low,
        "accuracy_high": high,
        "logprob_items": len(logprobs),
        "mean_logprob": mean,
        "mean_logprob_low": lp_low,
        "mean_logprob_high": lp_high,
    }


def breakdown(table: pa.Table, by: str) -> dict[str, dict[str, float | int]]:
    """{"<model> / <group>": measures} for each model and each value of column `by` (rows where it
    is null are left out: MATH level and subject exist only for the MATH benchmarks)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in table.to_pylist():
        if row[by] is not None and (by != "subject" or row["level"] is not None):
            label = f"level {row[by]}" if by == "level" else str(row[by])
            groups[f"{row['model']} / {label}"].append(row)
    return {label: measures(rows) for label, rows in sorted(groups.items())}


def overall(table: pa.Table) -> dict[str, dict[str, float | int]]:
    """{model: measures over all its items}."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in table.to_pylist():
        groups[row["model"]].append(row)
    return {model: measures(rows) for model, rows in groups.items()}
