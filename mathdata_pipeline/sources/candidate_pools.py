"""Open datasets that QaDS selects from besides the pipeline's own solutions (OpenMathMix,
METHODS.md §1): `configs/candidate_pools.yaml`, one entry per pool, each a local file or a Hugging
Face dataset with a field mapping, like the seed sources in `configs/sources.yaml`.

A pool holds reasoning rows (e.g. MetaMathQA, MathInstruct) or general rows (an instruction or
chat collection). A pool marked `evaluation_split: true` is loaded and embedded but is never a
training candidate unless a mixture spec names it in `evaluation_sources`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mathdata_pipeline.common.names import InvalidName, check_name
from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.common.text import problem_id, stable_hash
from mathdata_pipeline.sources.config import HubLocation
from mathdata_pipeline.sources.general import MESSAGE_TYPE
from mathdata_pipeline.sources.readers import InputError, Record

ROLES = ("system", "user", "assistant")
POOL_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("subset", pa.string()),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("license", pa.string()),
        pa.field("split", pa.string()),
        pa.field("evaluation_split", pa.bool_(), nullable=False),
        pa.field("source_record", pa.string()),
    ]
)


class CandidatePoolSpec(BaseModel):
    """One open dataset and how its records map onto a conversation.

    Where: `path` (absolute, or relative to the pools file), else `local` under the data folder,
    else `hf`. Single-turn records: `question` and `response` name the user and assistant fields
    (`system` optionally a system prompt). Chat records: `messages` names a list of turns whose
    role and text sit under `role_key` and `content_key`, with `roles` renaming role values (e.g.
    ShareGPT's {human: user, gpt: assistant}). `problem` names a field identifying the problem a
    row answers (rows sharing it are one problem, e.g. MetaMathQA's `original_question`; default:
    the first user turn); `subset` a field recorded per row (e.g. MetaMathQA's `type`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["reasoning", "general"]
    path: str | None = None
    local: str | None = None
    hf: HubLocation | None = None
    license: str | None = None
    license_field: str | None = None
    split: str = Field(default="train", description="the upstream split this file is")
    evaluation_split: bool = Field(
        default=False, description="an evaluation split: never a training candidate unless a spec allows it"
    )
    question: str | None = None
    response: str | None = None
    system: str | None = None
    messages: str | None = None
    role_key: str = "role"
    content_key: str = "content"
    roles: dict[str, Literal["system", "user", "assistant"]] = Field(default_factory=dict)
    problem: str | None = None
    subset: str | None = None

    @model_validator(mode="after")
    def _one_mapping(self) -> CandidatePoolSpec:
        single = self.question is not None or self.response is not None
        if single == (self.messages is not None):
            raise ValueError("map either `question` and `response` (single turn) or `messages` (chat), not both")
        if single and (self.question is None or self.response is None):
            raise ValueError("a single-turn pool needs both `question` and `response`")
        if not (self.path or self.local or self.hf):
            raise ValueError("a pool needs `path`, `local` or `hf`")
        return self


class CandidatePoolsFile(BaseModel):
    """The pools file: `candidate_pools: {name: CandidatePoolSpec}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate_pools: dict[str, CandidatePoolSpec] = Field(default_factory=dict)


def pools_path(path: Path | str | None = None) -> Path:
    """The pools file: `path`, else `<config_dir>/candidate_pools.yaml`."""
    return Path(path) if path else config_dir() / "candidate_pools.yaml"


def load_candidate_pools(path: Path | str | None = None) -> dict[str, CandidatePoolSpec]:
    """Parse and validate the pools file (see `pools_path`). Raises InputError naming the file
    and the offending key for unreadable YAML, a schema error or a bad pool name."""
    path = pools_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), f"cannot read candidate pools ({exc})") from exc
    try:
        pools = CandidatePoolsFile.model_validate(raw).candidate_pools
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(str(path), first["msg"], field=".".join(str(p) for p in first["loc"])) from exc
    for name in pools:
        try:
            check_name(name, what="candidate pool", where=str(path))
        except InvalidName as exc:
            raise InputError(str(path), str(exc), field=f"candidate_pools.{name}") from exc
    return pools


def chosen_pools(
    pools: dict[str, CandidatePoolSpec], names: list[str], path: Path | str | None = None
) -> dict[str, CandidatePoolSpec]:
    """The pools called `names` (all of them when empty), in file order; InputError naming the
    pools file and the unknown name otherwise."""
    unknown = [name for name in names if name not in pools]
    if unknown:
        known = ", ".join(pools) or "none"
        raise InputError(str(pools_path(path)), f"no candidate pool {unknown[0]!r} (configured: {known})")
    return {name: spec for name, spec in pools.items() if not names or name in names}


def _string(record: Record, label: str, name: str, *, required: bool) -> str | None:
    value = record.data.get(name)
    if value is None:
        if required:
            raise InputError(label, "missing required field", where=record.where, field=name)
        return None
    if not isinstance(value, str):
        raise InputError(label, f"expected str, got {type(value).__name__}", where=record.where, field=name)
    return value


def _chat(record: Record, label: str, spec: CandidatePoolSpec) -> list[dict[str, str]]:
    """The record's turns as [{role, content}] with roles renamed; raises InputError on bad turns."""
    turns = record.data.get(spec.messages)
    if not isinstance(turns, list):
        raise InputError(label, "expected a list of turns", where=record.where, field=spec.messages)
    out = []
    for index, turn in enumerate(turns):
        field = f"{spec.messages}[{index}]"
        if not isinstance(turn, dict):
            raise InputError(label, "expected an object", where=record.where, field=field)
        role, content = turn.get(spec.role_key), turn.get(spec.content_key)
        role = spec.roles.get(role, role)
        if role not in ROLES:
            found = turn.get(spec.role_key)
            message = f"role {found!r} is not one of {ROLES} (map it in `roles`)"
            raise InputError(label, message, where=record.where, field=field)
        if not isinstance(content, str):
            raise InputError(label, f"expected str under {spec.content_key!r}", where=record.where, field=field)
        out.append({"role": role, "content": content})
    return out


def conversation(record: Record, label: str, spec: CandidatePoolSpec) -> list[dict[str, str]] | None:
    """The conversation of one record, or None when it has no non-empty user turn or does not end
    with a non-empty assistant turn (the caller counts it). Raises InputError naming the record
    and field on a missing or wrongly typed field."""
    if spec.messages is not None:
        turns = [t for t in _chat(record, label, spec) if t["content"].strip()]
    else:
        system = _string(record, label, spec.system, required=False) if spec.system else None
        turns = [{"role": "system", "content": system}] if system and system.strip() else []
        turns += [
            {"role": "user", "content": _string(record, label, spec.question, required=True)},
            {"role": "assistant", "content": _string(record, label, spec.response, required=True)},
        ]
        turns = [t for t in turns if t["content"].strip()]
    has_user = any(t["role"] == "user" for t in turns)
    if not turns or not has_user or turns[-1]["role"] != "assistant":
        return None
    return [{"role": t["role"], "content": t["content"].strip()} for t in turns]


def _problem_text(record: Record, spec: CandidatePoolSpec, turns: list[dict[str, str]]) -> str:
    """The text that identifies the row's problem: the `problem` field when set, else the first user turn."""
    if spec.problem:
        value = record.data.get(spec.problem)
        if isinstance(value, str) and value.strip():
            return value
    return next(t["content"] for t in turns if t["role"] == "user")


def build_pool_rows(
    records: Iterable[Record], spec: CandidatePoolSpec, *, source: str, label: str
) -> tuple[pa.Table, dict[str, int]]:
    """Convert one pool's records into POOL_SCHEMA rows.

    Inputs: records (from `sources.readers`); the pool's spec; `source`, the pool name; `label`,
    the file or dataset name used in messages and `source_record`. Output: (table, counts with
    rows_read, rows_written, dropped_empty (no user turn or no final assistant reply) and
    dropped_duplicate (the same conversation again)). `row_id` hashes the pool and the
    conversation; `problem_id` the pool and the problem text. Raises InputError on malformed records.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    counts = {"rows_read": 0, "rows_written": 0, "dropped_empty": 0, "dropped_duplicate": 0}
    for record in records:
        counts["rows_read"] += 1
        turns = conversation(record, label, spec)
        if turns is None:
            counts["dropped_empty"] += 1
            continue
        row_id = stable_hash("pool", source, *(f"{t['role']}:{t['content']}" for t in turns))
        if row_id in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(row_id)
        subset = _string(record, label, spec.subset, required=False) if spec.subset else None
        license_ = _string(record, label, spec.license_field, required=False) if spec.license_field else spec.license
        rows.append(
            {
                "row_id": row_id,
                "source": source,
                "kind": spec.kind,
                "subset": subset,
                "problem_id": problem_id(source, _problem_text(record, spec, turns)),
                "messages": turns,
                "license": license_,
                "split": spec.split,
                "evaluation_split": spec.evaluation_split,
                "source_record": f"{label} {record.where}",
            }
        )
    counts["rows_written"] = len(rows)
    return pa.Table.from_pylist(rows, schema=POOL_SCHEMA), counts
