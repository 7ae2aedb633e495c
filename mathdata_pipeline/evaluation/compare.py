"""Paired comparison of two models scored on the same benchmark items.

For each measure (mean log-probability per token of the reference solution; accuracy of the greedy
answer) the items both sides scored are paired by id, and the mean of the per-item differences
a - b gets a paired-bootstrap 95% interval (items resampled with replacement, the same resample for
both sides). The verdict for `a`: "better" when the interval lies above 0, "worse" when below,
otherwise "no detectable difference". Overall and per benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.evaluation.comparisons import BASE, PREVIOUS_SUFFIX, Comparison
from mathdata_pipeline.evaluation.scoring import BASE as BASE_ROLE
from mathdata_pipeline.evaluation.scoring import FINE_TUNED

MEASURES = ("mean_logprob", "accuracy")
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
RESULT_SCHEMA = pa.schema(
    [
        pa.field("comparison", pa.string(), nullable=False),
        pa.field("a", pa.string(), nullable=False),
        pa.field("b", pa.string(), nullable=False),
        pa.field("measure", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("items", pa.int32(), nullable=False),
        pa.field("mean_a", pa.float64()),
        pa.field("mean_b", pa.float64()),
        pa.field("difference", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("model_a", pa.string()),
        pa.field("model_b", pa.string()),
        pa.field("claim", pa.string()),
    ]
)
ITEM_CHANGE_SCHEMA = pa.schema(
    [
        pa.field("comparison", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("level", pa.int8()),
        pa.field("subject", pa.string()),
        pa.field("mean_logprob_a", pa.float64()),
        pa.field("mean_logprob_b", pa.float64()),
        pa.field("logprob_difference", pa.float64()),
        pa.field("correct_a", pa.bool_()),
        pa.field("correct_b", pa.bool_()),
        pa.field("accuracy_change", pa.string()),
    ]
)
Reader = Callable[[str, str], pa.Table | None]


@dataclass
class PairResult:
    """One comparison: its RESULT_SCHEMA rows, its per-item changes and its one-line verdict."""

    comparison: Comparison
    rows: list[dict]
    items: pa.Table
    verdict: str


def side_rows(read: Reader, side: str, a_spec: str) -> tuple[pa.Table | None, str]:
    """(the per-item rows of one side, "") or (None, why not). `read(asset, partition)` returns a
    stored table or None. A side is a spec (its fine-tuned model), `<spec>@previous` (the scores
    that spec had before its latest model) or `base` (the base model rows of spec `a`'s table)."""
    if side == BASE:
        asset, spec, role = "benchmark_scores", a_spec, BASE_ROLE
    elif side.endswith(PREVIOUS_SUFFIX):
        asset, spec, role = "benchmark_scores_previous", side.removesuffix(PREVIOUS_SUFFIX), FINE_TUNED
    else:
        asset, spec, role = "benchmark_scores", side, FINE_TUNED
    table = read(asset, spec)
    if table is None:
        return None, f"{asset}[{spec}] does not exist yet"
    rows = table.filter(pc.equal(table.column("model"), role))
    return (rows, "") if rows.num_rows else (None, f"{asset}[{spec}] has no {role} rows")


def paired_bootstrap(differences: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of `differences` over `samples` resamples of
    the items with replacement (seeded); (nan, nan) for no items."""
    n = len(differences)
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, samples, 256):
        draws = rng.integers(0, n, size=(min(256, samples - start), n))
        means.append(differences[draws].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """better / worse / no detectable difference, from a 95% interval of a - b."""
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NO_DIFFERENCE


def compare_pair(
    comparison: Comparison, a: pa.Table, b: pa.Table, *, samples: int, seed: int, primary: str
) -> PairResult:
    """Compare side `a` with side `b` (per-item rows of one model each, ITEM_SCHEMA) on the items
    both scored: RESULT_SCHEMA rows for every measure, overall ("all") and per benchmark, the
    per-item changes, and the verdict line led by the `primary` measure.
    Raises ValueError when the sides were scored with different settings (not the same items)."""
    settings_a, settings_b = set(a.column("settings").to_pylist()), set(b.column("settings").to_pylist())
    if settings_a != settings_b:
        raise ValueError(
            f"{comparison.name}: {comparison.a} and {comparison.b} were scored with different settings "
            f"({', '.join(sorted(settings_a))} vs {', '.join(sorted(settings_b))}); rescore both with one config"
        )
    by_id = {r["item_id"]: r for r in b.to_pylist()}
    pairs = [(ra, by_id[ra["item_id"]]) for ra in a.to_pylist() if ra["item_id"] in by_id]
    rows = []
    for measure in MEASURES:
        values = [(ra["benchmark"], _value(ra, measure), _value(rb, measure)) for ra, rb in pairs]
        values = [v for v in values if v[1] is not None and v[2] is not None]
        scopes = ["all", *sorted({bench for bench, _, _ in values})]
        for scope in scopes:
            chosen = [(x, y) for bench, x, y in values if scope in ("all", bench)]
            rows.append(_result(comparison, measure, scope, chosen, samples, seed, (_model_name(a), _model_name(b))))
    return PairResult(comparison, rows, _item_changes(comparison.name, pairs), verdict_line(comparison, rows, primary))


def verdict_line(comparison: Comparison, rows: list[dict], primary: str) -> str:
    """One line: the verdict of the primary measure, then every measure's difference and interval."""
    overall = {r["measure"]: r for r in rows if r["scope"] == "all" and r["items"] > 0}
    lead = overall.get(primary) or next(iter(overall.values()), None)
    if lead is None:
        return f"{comparison.name}: {comparison.a} vs {comparison.b}: no item scored on both sides"
    relation = {BETTER: "is better than", WORSE: "is worse than", NO_DIFFERENCE: "shows no detectable difference from"}
    parts = [_describe(lead)] + [_describe(overall[m]) for m in MEASURES if m in overall and m != lead["measure"]]
    return (
        f"{comparison.name}: {comparison.a} {relation[lead['verdict']]} {comparison.b} "
        f"({lead['measure']}) — " + "; ".join(parts)
    )


def _describe(row: dict) -> str:
    scale, unit = (100.0, " pts") if row["measure"] == "accuracy" else (1.0, "")
    digits = 1 if row["measure"] == "accuracy" else 4
    return (
        f"{row['measure']} {row['difference'] * scale:+.{digits}f}{unit} "
        f"(95% CI {row['ci_low'] * scale:+.{digits}f} to {row['ci_high'] * scale:+.{digits}f}, "
        f"{row['items']} items): {row['verdict']}"
    )


def _value(row: dict, measure: str) -> float | None:
    value = row["correct"] if measure == "accuracy" else row["mean_logprob"]
    return None if value is None else float(value)


def _model_name(side: pa.Table) -> str:
    """`model_id@revision` of the model behind a side's rows."""
    ids, revisions = side.column("model_id").to_pylist(), side.column("model_revision").to_pylist()
    return ", ".join(sorted({f"{m}@{r}" for m, r in zip(ids, revisions)}))


def _result(comparison, measure, scope, chosen, samples, seed, models) -> dict:
    x = np.asarray([v for v, _ in chosen], dtype=np.float64)
    y = np.asarray([v for _, v in chosen], dtype=np.float64)
    low, high = paired_bootstrap(x - y, samples, seed)
    empty = len(chosen) == 0
    return {
        "comparison": comparison.name,
        "a": comparison.a,
        "b": comparison.b,
        "measure": measure,
        "scope": scope,
        "items": len(chosen),
        "mean_a": None if empty else float(x.mean()),
        "mean_b": None if empty else float(y.mean()),
        "difference": None if empty else float((x - y).mean()),
        "ci_low": None if empty else low,
        "ci_high": None if empty else high,
        "verdict": "no items" if empty else verdict(low, high),
        "model_a": models[0],
        "model_b": models[1],
        "claim": comparison.claim,
    }


def _item_changes(name: str, pairs: list[tuple[dict, dict]]) -> pa.Table:
    """One row per paired item: both sides' scores, and gained/lost/same for accuracy."""
    rows = []
    for a, b in pairs:
        both = a["mean_logprob"] is not None and b["mean_logprob"] is not None
        change = None
        if a["correct"] is not None and b["correct"] is not None:
            change = "same" if a["correct"] == b["correct"] else ("gained" if a["correct"] else "lost")
        rows.append(
            {
                "comparison": name,
                "item_id": a["item_id"],
                "benchmark": a["benchmark"],
                "level": a["level"],
                "subject": a["subject"],
                "mean_logprob_a": a["mean_logprob"],
                "mean_logprob_b": b["mean_logprob"],
                "logprob_difference": a["mean_logprob"] - b["mean_logprob"] if both else None,
                "correct_a": a["correct"],
                "correct_b": b["correct"],
                "accuracy_change": change,
            }
        )
    return pa.Table.from_pylist(rows, schema=ITEM_CHANGE_SCHEMA)


def compare_all(
    comparisons: list[Comparison], read: Reader, *, samples: int, seed: int, primary: str
) -> tuple[list[PairResult], list[str]]:
    """Every comparison whose two sides have scores: (results, reasons for the skipped ones)."""
    results, skipped = [], []
    for comparison in comparisons:
        a, why_a = side_rows(read, comparison.a, comparison.a)
        b, why_b = side_rows(read, comparison.b, comparison.a)
        if a is None or b is None:
            skipped.append(f"{comparison.name}: {why_a or why_b}")
            continue
        try:
            results.append(compare_pair(comparison, a, b, samples=samples, seed=seed, primary=primary))
        except ValueError as exc:
            skipped.append(str(exc))
    return results, skipped
