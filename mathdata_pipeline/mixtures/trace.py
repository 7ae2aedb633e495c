"""Row lineage: everything that led to one mixture row, read back from the stored tables, and
(given a lookup of the Dagster instance) the runs that wrote those tables and when."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from mathdata_pipeline.common.table_stats import display_number
from mathdata_pipeline.storage.layout import table_path

# The table whose rows a solutions row of each generating method comes from (sample_id is shared).
GENERATING_ASSET = {
    "dart": "rejection_samples",
    "mugglemath": "augmented_responses",
    "scalequest": "synthesized_responses",
}

# (asset, partition key or None) -> {"run_id", "job", "materialized_at"} of the materialization
# that wrote that table, or None when the instance has none (see `common.metadata.materialization_run`).
RunLookup = Callable[[str, "str | None"], "dict | None"]


def _find(root: UPath, asset: str, column: str, value: str) -> dict | None:
    """The first row of any partition of `asset` whose `column` equals `value` (None if absent)."""
    found = _find_located(root, asset, column, value)
    return found[0] if found else None


def _find_located(root: UPath, asset: str, column: str, value: str) -> tuple[dict, str] | None:
    """(the first row of any partition of `asset` whose `column` equals `value`, that partition's
    key), or None if absent. The key is the file name unquoted ("data" for an unpartitioned table)."""
    folder = root / asset
    if not value or not folder.exists():
        return None
    for path in sorted(folder.glob("*.parquet"), key=str):
        with path.open("rb") as fh:
            table = pq.read_table(fh, filters=pc.field(column) == value)
        if table.num_rows:
            return table.slice(0, 1).to_pylist()[0], unquote(path.name[: -len(".parquet")])
    return None


def trace_row(root: UPath, row_id: str, runs: RunLookup | None = None) -> dict:
    """The history of mixture row `row_id` under the storage `root`.

    Output: {"row": mixture row, "selection": its decision in `selections`, "quality": its
    `quality_scores` row, "influence": its `influence_scores` row, "solution": the solutions row
    (model, template, sampling parameters, seed, grade), "generation": the generated sample's own
    row (`GENERATING_ASSET`: max_tokens, finish reason, verdict, …), "problem": its `question_pool`
    row, "seed_problem": the seed it derives from, "general": the `general_pool` row, "runs": one
    {"step", "asset", "partition", "run_id", "job", "materialized_at"} per table on the way
    (generation, solutions, selections, mixture) from `runs`, with None where the instance has no
    materialization (all None without `runs`)}; absent parts are None. Raises KeyError when no
    mixture has the row.
    """
    located = _find_located(root, "mixture", "row_id", row_id)
    if located is None:
        raise KeyError(f"no mixture row {row_id!r} under {root / 'mixture'}")
    row, spec = located
    candidate = row["sample_id"] or row["general_row_id"] or row.get("pool_row_id")
    history: dict = {"row": row}
    history["selection"] = next(_decisions(root, row["mixture"], candidate), None)
    history["quality"] = _find(root, "quality_scores", "candidate_id", candidate)
    history["influence"] = _find(root, "influence_scores", "sample_id", candidate) if row["sample_id"] else None
    solution = _find_located(root, "solutions", "sample_id", row["sample_id"]) if row["sample_id"] else None
    history["solution"] = solution[0] if solution else None
    asset = GENERATING_ASSET.get((history["solution"] or {}).get("method") or "")
    generation = _find_located(root, asset, "sample_id", row["sample_id"]) if asset else None
    history["generation"] = generation[0] if generation else None
    history["problem"] = _find(root, "question_pool", "problem_id", row["problem_id"]) if row["problem_id"] else None
    parent = (history["problem"] or {}).get("parent_problem_id")
    history["seed_problem"] = (
        _find(root, "seed_problems", "problem_id", parent or row["problem_id"]) if row["problem_id"] else None
    )
    history["general"] = _find(root, "general_pool", "row_id", row["general_row_id"]) if row["general_row_id"] else None
    steps = [("generation", asset, generation), ("solutions", "solutions", solution)]
    steps += [("selection", "selections", (None, spec)), ("mixture", "mixture", (None, spec))]
    history["runs"] = [
        {"step": step, "asset": name, "partition": where[1], **((runs and runs(name, where[1])) or _NO_RUN)}
        for step, name, where in steps
        if name and where
    ]
    return history


_NO_RUN = {"run_id": None, "job": None, "materialized_at": None}


def _decisions(root: UPath, mixture: str, candidate: str):
    """The `selections` rows of one mixture partition for `candidate`."""
    path = table_path(root, "selections", mixture)
    if path.exists():
        with path.open("rb") as fh:
            table = pq.read_table(fh, filters=pc.field("candidate_id") == candidate)
        yield from table.to_pylist()


_SHOWN = {
    "row": ["row_id", "mixture", "kind", "source", "origin", "config_hash"],
    "selection": ["decision", "selection_rank", "min_distance", "quality", "influence_score"],
    "quality": ["q_label", "q_pred", "quality"],
    "influence": ["s_correct", "s_incorrect", "fused_rank", "perplexity"],
    "solution": [
        "sample_id",
        "origin",
        "method",
        "dart_strategies",
        "model",
        "template",
        "temperature",
        "top_p",
        "seed",
        "extracted_answer",
        "reference_answer",
        "grader",
    ],
    "generation": ["max_tokens", "finish_reason", "completion_tokens", "correct", "grade_reason", "kept"],
    "problem": ["problem_id", "origin", "method", "parent_problem_id", "reference_answer", "method_params_hash"],
    "seed_problem": ["problem_id", "source", "split", "source_id", "source_record", "license", "question"],
    "general": ["row_id", "source", "license", "source_record"],
}
_TITLES = {
    "row": "mixture row",
    "selection": "QaDS decision",
    "quality": "quality score",
    "influence": "influence",
    "solution": "generation and grade",
    "generation": "generated sample",
    "problem": "question pool",
    "seed_problem": "seed problem",
    "general": "general source",
}


_NOT_RECORDED = "no materialization in this Dagster instance (DAGSTER_HOME)"


def format_history(history: dict, width: int = 100) -> str:
    """A readable, sectioned rendering of `trace_row`'s output."""
    lines = []
    for part, fields in _SHOWN.items():
        record = history.get(part)
        if not record:
            continue
        lines.append(f"== {_TITLES[part]}")
        for field in fields:
            if field in record and record[field] is not None:
                raw = record[field]
                value = (display_number(raw) if isinstance(raw, float) else str(raw)).replace("\n", " ")
                lines.append(f"  {field:<18} {value[:width] + ('…' if len(value) > width else '')}")
    if history.get("runs"):
        lines.append("== runs (Dagster)")
        for run in history["runs"]:
            table = run["asset"] + (f"[{run['partition']}]" if run["partition"] not in (None, "data") else "")
            made = f"run {run['run_id']} ({run['job']}) at {run['materialized_at']}" if run["run_id"] else _NOT_RECORDED
            lines.append(f"  {run['step']:<18} {table}: {made}")
    messages = history["row"].get("messages") or []
    lines.append("== messages")
    for m in messages:
        text = m["content"].replace("\n", " ")
        lines.append(f"  {m['role']:<10} {text[:width] + ('…' if len(text) > width else '')}")
    return "\n".join(lines)
