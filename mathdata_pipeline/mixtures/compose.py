"""A mixture from selection decisions: rows in chat `messages` form with their lineage, the
manifest, the checks every mixture must pass, and the exports (Parquet, JSONL, `datasets`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.names import path_component
from mathdata_pipeline.common.text import normalize_text, stable_hash
from mathdata_pipeline.mixtures.spec import MixtureSpec
from mathdata_pipeline.sources.general import MESSAGE_TYPE
from mathdata_pipeline.storage.folders import replaced_folder

MIXTURE_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("mixture", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("method", pa.string()),
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("problem_id", pa.string()),
        pa.field("sample_id", pa.string()),
        pa.field("general_row_id", pa.string()),
        pa.field("pool_row_id", pa.string()),
        pa.field("quality", pa.float32()),
        pa.field("selection_rank", pa.int32()),
        pa.field("min_distance", pa.float32()),
        pa.field("influence_score", pa.float32()),
        pa.field("config_hash", pa.string(), nullable=False),
    ]
)


def mixture_row_id(mixture: str, candidate_id: str) -> str:
    """The id of a mixture row: stable for (mixture, candidate), so `mathdata trace` finds it again."""
    return "mx-" + stable_hash(mixture, candidate_id, length=16)


def compose(
    mixture: str,
    spec: MixtureSpec,
    decisions: pa.Table,
    solutions: pa.Table,
    general: pa.Table,
    pool: pa.Table | None = None,
) -> pa.Table:
    """Mixture rows for the selected decisions, reasoning first, each group in selection order.

    Inputs: the mixture name and spec; the decisions of both kinds (selection.DECISION_SCHEMA);
    all solutions rows (SOLUTION_SCHEMA, keyed by `sample_id`); the general pool (keyed by
    `row_id`); the open candidate pool (keyed by `row_id`; rows of origin `open`). Output:
    MIXTURE_SCHEMA rows. Solutions become a user/assistant pair; pool rows keep their messages.
    """
    chosen = decisions.filter(pc.field("selected")).sort_by([("kind", "descending"), ("selection_rank", "ascending")])
    solution_by_id = {
        r["sample_id"]: r
        for r in solutions.select(["sample_id", "problem_id", "method", "question", "response"]).to_pylist()
    }
    general_by_id = {r["row_id"]: r for r in general.select(["row_id", "messages"]).to_pylist()}
    pool_by_id = {} if pool is None else {r["row_id"]: r for r in pool.select(["row_id", "messages"]).to_pylist()}
    rows = []
    config_hash = spec.config_hash()
    for d in chosen.to_pylist():
        cid = d["candidate_id"]
        row = {
            "row_id": mixture_row_id(mixture, cid),
            "mixture": mixture,
            "kind": d["kind"],
            "source": d["source"],
            "origin": d["origin"],
            "method": None,
            "problem_id": None,
            "sample_id": None,
            "general_row_id": None,
            "pool_row_id": None,
            "quality": d["quality"],
            "selection_rank": d["selection_rank"],
            "min_distance": d["min_distance"],
            "influence_score": d["influence_score"],
            "config_hash": config_hash,
        }
        if cid in pool_by_id:
            row.update(pool_row_id=cid, messages=pool_by_id[cid]["messages"])
        elif d["kind"] == "reasoning":
            sol = solution_by_id[cid]
            row.update(
                problem_id=sol["problem_id"],
                sample_id=cid,
                method=sol["method"],
                messages=[
                    {"role": "user", "content": sol["question"]},
                    {"role": "assistant", "content": sol["response"]},
                ],
            )
        else:
            row.update(general_row_id=cid, messages=general_by_id[cid]["messages"])
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=MIXTURE_SCHEMA)


def manifest(mixture: str, spec: MixtureSpec, table: pa.Table, decisions: pa.Table) -> dict:
    """Per-kind and per-source counts (candidates and selected), realised shares, rows by origin
    (where the question came from) and by method (what wrote the response: `reference` for a seed
    dataset's own solution, `dart`, `mugglemath`, `scalequest`; DART rows answer seed questions, so
    only `by_method` counts them), config hash."""
    kinds = table.column("kind").to_pylist()
    candidates = Counter(zip(decisions.column("kind").to_pylist(), decisions.column("source").to_pylist()))
    selected = Counter(zip(kinds, table.column("source").to_pylist()))
    total = len(kinds)
    return {
        "mixture": mixture,
        "config_hash": spec.config_hash(),
        "rows": total,
        "shares": {k: (kinds.count(k) / total if total else 0.0) for k in ("reasoning", "general")},
        "target_shares": {"reasoning": 1.0 - spec.general_share, "general": spec.general_share},
        "by_source": {
            f"{k}/{s}": {"candidates": candidates[(k, s)], "selected": selected.get((k, s), 0)}
            for k, s in sorted(candidates)
        },
        "by_origin": dict(sorted(Counter(table.column("origin").to_pylist()).items())),
        "by_method": dict(sorted(Counter(m for m in table.column("method").to_pylist() if m).items())),
        "spec": spec.model_dump(),
    }


def general_budget(reasoning_selected: int, spec: MixtureSpec, n_general: int) -> int:
    """How many general rows make the general share `spec.general_share` next to the reasoning
    rows, capped by the general selection ratio of its candidates."""
    if spec.general_share <= 0 or n_general == 0:
        return 0
    wanted = round(reasoning_selected * spec.general_share / (1.0 - spec.general_share))
    return min(wanted, int(round(spec.general.selection_ratio * n_general)))


def duplicate_rows(table: pa.Table) -> list[str]:
    """Row ids that repeat an earlier row: the same row id, or the same normalized conversation."""
    seen_ids, seen_texts, dupes = set(), set(), []
    for row_id, messages in zip(table.column("row_id").to_pylist(), table.column("messages").to_pylist()):
        text = normalize_text("\n".join(f"{m['role']}: {m['content']}" for m in messages))
        if row_id in seen_ids or text in seen_texts:
            dupes.append(row_id)
        seen_ids.add(row_id)
        seen_texts.add(text)
    return dupes


def ratio_problems(report: dict, spec: MixtureSpec) -> list[str]:
    """Kinds whose realised share misses its target by more than the tolerance plus one row."""
    slack = spec.tolerance + (1.0 / report["rows"] if report["rows"] else 0.0)
    return [
        f"{kind}: {report['shares'][kind]:.3f} vs target {target:.3f} (tolerance {slack:.3f})"
        for kind, target in report["target_shares"].items()
        if abs(report["shares"][kind] - target) > slack
    ]


def schema_problems(table: pa.Table) -> list[str]:
    """Differences from MIXTURE_SCHEMA, plus rows whose messages are empty or lack an assistant turn."""
    problems = [
        f"column {f.name}: expected {f.type}, "
        f"got {table.schema.field(f.name).type if f.name in table.schema.names else 'missing'}"
        for f in MIXTURE_SCHEMA
        if f.name not in table.schema.names or table.schema.field(f.name).type != f.type
    ]
    if not problems:
        for row_id, messages in zip(table.column("row_id").to_pylist(), table.column("messages").to_pylist()):
            if not messages or not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
                problems.append(f"row {row_id}: no assistant turn")
    return problems


def user_text(table: pa.Table) -> list[tuple[str, str]]:
    """(row_id, first user turn) of every row: what decontamination checks."""
    return [
        (rid, next((m["content"] for m in msgs if m["role"] == "user"), ""))
        for rid, msgs in zip(table.column("row_id").to_pylist(), table.column("messages").to_pylist())
    ]


_EXPORT_FILES = ("manifest.json", "mixture.jsonl", "hf_dataset")


def export(table: pa.Table, report: dict, folder: Path, extra_files: dict[str, str] | None = None) -> dict[str, str]:
    """Write the export folder of a mixture and swap it in whole (`storage.folders.replaced_folder`):
    `mixture.jsonl` (one {"row_id", "kind", "source", "messages"} per line), a `datasets` folder
    `hf_dataset/` (`datasets.load_from_disk` opens it), then `extra_files` (file name -> text, e.g.
    the dataset card `README.md`), and `manifest.json` last, so a folder with a manifest is whole.
    A reader sees the previous export or this one, never a mix. Returns the paths of the manifest,
    the JSONL, the dataset and each extra file (keyed by its name). Raises ValueError for an extra
    file name that is not one plain file name or that clashes with the export's own files."""
    import datasets

    extra_files = extra_files or {}
    for name in extra_files:
        if name in _EXPORT_FILES or name.startswith(".") or path_component(name) != name:
            raise ValueError(f"extra export file {name!r}: use a plain file name other than {', '.join(_EXPORT_FILES)}")
    with replaced_folder(folder) as staging:
        with open(staging / "mixture.jsonl", "w", encoding="utf-8") as fh:
            for row in table.select(["row_id", "kind", "source", "messages"]).to_pylist():
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        datasets.Dataset.from_list(table.to_pylist()).save_to_disk(str(staging / "hf_dataset"))
        for name, text in extra_files.items():
            (staging / name).write_text(text, encoding="utf-8")
        (staging / "manifest.json").write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
    paths = {"manifest": "manifest.json", "jsonl": "mixture.jsonl", "datasets": "hf_dataset"}
    return {key: str(folder / name) for key, name in {**paths, **{n: n for n in extra_files}}.items()}
