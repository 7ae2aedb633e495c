"""Row lineage: everything that led to one mixture row, read back from the stored tables."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from upath import UPath

from mathdata_pipeline.common.table_stats import display_number
from mathdata_pipeline.storage.layout import table_path


def _find(root: UPath, asset: str, column: str, value: str) -> dict | None:
    """The first row of any partition of `asset` whose `column` equals `value` (None if absent)."""
    folder = root / asset
    if not value or not folder.exists():
        return None
    files = sorted(str(p.path) if p.protocol in ("", "file", "local") else str(p) for p in folder.glob("*.parquet"))
    if not files:
        return None
    table = pads.dataset(files, format="parquet", filesystem=None if "://" not in files[0] else folder.fs).to_table(
        filter=pc.field(column) == value
    )
    return table.slice(0, 1).to_pylist()[0] if table.num_rows else None


def trace_row(root: UPath, row_id: str) -> dict:
    """The history of mixture row `row_id` under the storage `root`.

    Output: {"row": mixture row, "selection": its decision in `selections`, "quality": its
    `quality_scores` row, "influence": its `influence_scores` row, "solution": the solutions row
    (model, template, sampling parameters, seed, grade), "problem": its `question_pool` row,
    "seed_problem": the seed it derives from, "general": the `general_pool` row}; absent parts are
    None. Raises KeyError when no mixture has the row.
    """
    row = _find(root, "mixture", "row_id", row_id)
    if row is None:
        raise KeyError(f"no mixture row {row_id!r} under {root / 'mixture'}")
    candidate = row["sample_id"] or row["general_row_id"] or row.get("pool_row_id")
    history: dict = {"row": row}
    history["selection"] = next(_decisions(root, row["mixture"], candidate), None)
    history["quality"] = _find(root, "quality_scores", "candidate_id", candidate)
    history["influence"] = _find(root, "influence_scores", "sample_id", candidate) if row["sample_id"] else None
    history["solution"] = _find(root, "solutions", "sample_id", row["sample_id"]) if row["sample_id"] else None
    history["problem"] = _find(root, "question_pool", "problem_id", row["problem_id"]) if row["problem_id"] else None
    parent = (history["problem"] or {}).get("parent_problem_id")
    history["seed_problem"] = (
        _find(root, "seed_problems", "problem_id", parent or row["problem_id"]) if row["problem_id"] else None
    )
    history["general"] = _find(root, "general_pool", "row_id", row["general_row_id"]) if row["general_row_id"] else None
    return history


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
    "problem": "question pool",
    "seed_problem": "seed problem",
    "general": "general source",
}


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
    messages = history["row"].get("messages") or []
    lines.append("== messages")
    for m in messages:
        text = m["content"].replace("\n", " ")
        lines.append(f"  {m['role']:<10} {text[:width] + ('…' if len(text) > width else '')}")
    return "\n".join(lines)
