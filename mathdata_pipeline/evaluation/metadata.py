"""Materialization metadata of the evaluation assets: what the UI shows on their pages."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, markdown_table
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.evaluation.compare import PairResult
from mathdata_pipeline.evaluation.plots import difference_plot, loss_curve
from mathdata_pipeline.evaluation.sft import COUNT_KEYS, SftRun
from mathdata_pipeline.evaluation.summary import breakdown, overall


def sft_metadata(run: SftRun, spec: str) -> dict[str, Any]:
    """Tokens trained, loss curve, wall time, device, the model's files and the example counts."""
    model, config = run.model, run.model.config
    losses = [round(x, 4) for x in model.train_loss]
    return {
        "trained": not run.reused,
        "reused": run.reused,
        "resumed_from_step": run.resumed_from,
        "fingerprint": config["fingerprint"],
        "steps": model.steps,
        "tokens_trained": dg.MetadataValue.int(int(config["tokens_trained"])),
        "final_loss": losses[-1] if losses else None,
        "loss_curve": dg.MetadataValue.md(loss_curve(f"sft_model[{spec}]: training loss", losses)),
        "wall_seconds": round(model.wall_seconds, 1),
        "device": config["device"],
        "model": dg.MetadataValue.path(str(model.hf_dir)),
        "gguf": dg.MetadataValue.path(str(model.gguf_path)) if model.gguf_path else config["gguf_skipped"],
        "settings": dg.MetadataValue.json({k: v for k, v in config.items() if k not in COUNT_KEYS}),
        **counts_metadata({k: config.get(k, 0) for k in COUNT_KEYS}),
    }


def scores_metadata(table: pa.Table, logprob: GenerationStats, generation: GenerationStats) -> dict[str, Any]:
    """Headline accuracy and mean log-probability per model with 95% intervals (as numbers, so the
    UI plots them over materializations), breakdowns per benchmark, MATH level and subject, and the
    engine statistics."""
    metadata: dict[str, Any] = {}
    for model, values in overall(table).items():
        prefix = "" if model == "fine-tuned" else f"{model}_"
        metadata.update({f"{prefix}{k}": _number(v) for k, v in values.items()})
    for column in ("benchmark", "level", "subject"):
        metadata[f"by_{column}"] = dg.MetadataValue.md(markdown_table(breakdown(table, column), column))
    failed = sum(1 for e in table.column("error").to_pylist() if e and not e.startswith("empty_completion"))
    too_long = sum(1 for t in table.column("logprob_target").to_pylist() if t == "too_long")
    metadata.update(counts_metadata({"accuracy_failed_requests": failed, "logprob_too_long": too_long}))
    metadata.update({f"logprob_{k}": v for k, v in generation_metadata(logprob).items()})
    metadata.update(generation_metadata(generation))
    return metadata


def comparison_metadata(results: list[PairResult], skipped: list[str]) -> dict[str, Any]:
    """The verdict lines, the difference plot, each comparison's numbers and what was skipped."""
    rows = [row for result in results for row in result.rows]
    metadata: dict[str, Any] = {
        "verdict": dg.MetadataValue.md("\n".join(f"- {r.verdict}" for r in results)),
        "plot": dg.MetadataValue.md(difference_plot("paired differences a - b, 95% bootstrap intervals", rows)),
        "compared": len(results),
        "skipped": dg.MetadataValue.json(skipped),
    }
    for row in rows:
        if row["scope"] == "all" and row["items"]:
            key = f"{row['comparison']}/{row['measure']}"
            metadata.update(
                {
                    f"{key}/difference": _number(row["difference"]),
                    f"{key}/ci_low": _number(row["ci_low"]),
                    f"{key}/ci_high": _number(row["ci_high"]),
                    f"{key}/verdict": row["verdict"],
                }
            )
    for result in results:
        changes = result.items.column("accuracy_change").to_pylist()
        for change in ("gained", "lost"):
            metadata[f"{result.comparison.name}/items_{change}"] = changes.count(change)
    return metadata


def _number(value: float | int) -> Any:
    """Dagster metadata for a number (NaN, which JSON cannot carry, becomes an empty value)."""
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.float(round(float(value), 6)) if not math.isnan(value) else None
