"""The rows QaDS chooses from: every solution (reasoning), every general conversation and every row
of the open candidate pools, with the text that is embedded and scored."""

from __future__ import annotations

from collections.abc import Collection

import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash

OPEN_ORIGIN = "open"
CANDIDATE_SCHEMA = pa.schema(
    [
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("problem_id", pa.string()),
        pa.field("evaluation_split", pa.bool_(), nullable=False),
        pa.field("question", pa.string()),
        pa.field("response", pa.string()),
    ]
)


def _first(messages: list[dict], role: str) -> str:
    return next((m["content"] for m in messages if m["role"] == role), "")


def candidate_rows(
    solutions: pa.Table | None,
    general: pa.Table | None,
    pool: pa.Table | None = None,
    *,
    evaluation_sources: Collection[str] = (),
    max_per_group: int = 0,
    seed: int = 0,
) -> pa.Table:
    """Candidates of both kinds.

    Inputs: all `solutions` rows (reasoning; id = `sample_id`, problem = `problem_id`); the
    `general_pool` (id and problem = `row_id`; the first user turn is the question and the first
    assistant turn the response); the `candidate_pool` (id = `row_id`, its own kind, problem and
    evaluation flag, origin `open`); `evaluation_sources`, the general sets marked as evaluation
    splits; `max_per_group`, when > 0, keeps at most that many rows per (kind, source, origin,
    method), chosen by a seeded hash (the demo's CPU budget; 0 keeps everything), so a few DART
    rows (origin seed, method dart) are not sampled away among thousands of seed solutions.
    Output: CANDIDATE_SCHEMA rows, sorted by id.
    """
    rows, methods = [], {}
    if solutions is not None:
        columns = ["sample_id", "problem_id", "source", "origin", "method", "question", "response"]
        for r in solutions.select(columns).to_pylist():
            methods[r["sample_id"]] = r["method"]
            rows.append(
                {
                    "candidate_id": r["sample_id"],
                    "kind": "reasoning",
                    "source": r["source"],
                    "origin": r["origin"],
                    "problem_id": r["problem_id"],
                    "evaluation_split": False,
                    "question": r["question"],
                    "response": r["response"],
                }
            )
    if general is not None:
        for r in general.select(["row_id", "source", "messages"]).to_pylist():
            rows.append(
                {
                    "candidate_id": r["row_id"],
                    "kind": "general",
                    "source": r["source"],
                    "origin": "general",
                    "problem_id": r["row_id"],
                    "evaluation_split": r["source"] in evaluation_sources,
                    "question": _first(r["messages"], "user"),
                    "response": _first(r["messages"], "assistant"),
                }
            )
    if pool is not None:
        for r in pool.select(["row_id", "kind", "source", "problem_id", "evaluation_split", "messages"]).to_pylist():
            rows.append(
                {
                    "candidate_id": r["row_id"],
                    "kind": r["kind"],
                    "source": r["source"],
                    "origin": OPEN_ORIGIN,
                    "problem_id": r["problem_id"],
                    "evaluation_split": r["evaluation_split"],
                    "question": _first(r["messages"], "user"),
                    "response": _first(r["messages"], "assistant"),
                }
            )
    if max_per_group > 0:
        groups: dict[tuple, list[dict]] = {}
        for row in rows:
            key = (row["kind"], row["source"], row["origin"], methods.get(row["candidate_id"], ""))
            groups.setdefault(key, []).append(row)
        rows = [
            row
            for members in groups.values()
            for row in sorted(members, key=lambda r: stable_hash(str(seed), r["candidate_id"]))[:max_per_group]
        ]
    rows.sort(key=lambda r: r["candidate_id"])
    return pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)


def candidate_texts(
    solutions: pa.Table | None, general: pa.Table | None, pool: pa.Table | None = None
) -> dict[str, tuple[str, str]]:
    """{candidate_id: (question, response)} of every candidate (the texts that are scored)."""
    table = candidate_rows(solutions, general, pool)
    return dict(
        zip(
            table.column("candidate_id").to_pylist(),
            zip(table.column("question").to_pylist(), table.column("response").to_pylist()),
        )
    )
