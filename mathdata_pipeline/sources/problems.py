"""Turning raw records into rows of the problem schema (DESIGN.md, "Rows carry their history").

Columns: problem_id, source, split, question, reference_answer, reference_solution, level,
subject, license, origin, parent_problem_id, method, method_params_hash, plus source_id and
source_record (where in the input the row came from).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from mathdata_pipeline.common.text import problem_id
from mathdata_pipeline.grading import reference_answer_from_solution
from mathdata_pipeline.sources.config import ProblemSourceSpec
from mathdata_pipeline.sources.corrections import apply_corrections, corrections_path, load_corrections
from mathdata_pipeline.sources.readers import InputError, Record

PROBLEM_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        pa.field("reference_answer", pa.string()),
        pa.field("reference_solution", pa.string()),
        pa.field("level", pa.int8()),
        pa.field("subject", pa.string()),
        pa.field("license", pa.string()),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("parent_problem_id", pa.string()),
        pa.field("method", pa.string()),
        pa.field("method_params_hash", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("source_record", pa.string()),
    ]
)

_LEVEL_RE = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


@dataclass
class ProblemStats:
    """Counts reported as metadata: every dropped row is accounted for here."""

    rows_read: int = 0
    rows_written: int = 0
    missing_answer: int = 0
    dropped_missing_answer: int = 0
    dropped_duplicate_question: int = 0
    corrections_applied: int = 0
    corrections_solution_rewritten: int = 0
    corrections_not_found: int = 0
    corrections_stale: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return asdict(self)


def answer_text(value: Any) -> str | None:
    """A reference answer value as text: numbers and booleans via str, lists comma-joined, None kept.

    JSON-encoded lists (OlympiadBench stores `"['2']"`-style strings as real lists) are joined
    element by element, so `["2", "3"]` becomes `"2, 3"`.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        parts = [answer_text(v) for v in value]
        return ", ".join(p for p in parts if p) or None
    raise TypeError(type(value).__name__)


def _field(record: Record, label: str, name: str, types: tuple[type, ...], *, required: bool) -> Any:
    if name not in record.data or record.data[name] is None:
        if required:
            raise InputError(label, "missing required field", where=record.where, field=name)
        return None
    value = record.data[name]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        expected = " or ".join(t.__name__ for t in types)
        raise InputError(label, f"expected {expected}, got {type(value).__name__}", where=record.where, field=name)
    return value


def _question(record: Record, label: str, spec: ProblemSourceSpec) -> str:
    names = [spec.question] if isinstance(spec.question, str) else spec.question
    parts = [_field(record, label, n, (str,), required=(n == names[-1])) for n in names]
    text = "\n\n".join(p.strip() for p in parts if p and p.strip())
    if not text:
        raise InputError(label, "question is empty", where=record.where, field=names[-1])
    return text


def _reference_answer(record: Record, label: str, spec: ProblemSourceSpec) -> str | None:
    rule = spec.answer
    if rule is None:
        return None
    if rule.style == "field":
        value = _field(record, label, rule.field, (str, int, float, bool, list), required=False)
        if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        try:
            return answer_text(value)
        except TypeError as exc:
            raise InputError(label, f"answer list holds a {exc}", where=record.where, field=rule.field) from exc
    text = _field(record, label, rule.field, (str,), required=False)
    return reference_answer_from_solution(text, rule.style) if text else None


def _solution(record: Record, label: str, name: str) -> str | None:
    value = _field(record, label, name, (str, list), required=False)
    if isinstance(value, list):  # OlympiadBench stores one or more solutions as a list
        if not all(isinstance(v, str) for v in value):
            raise InputError(label, "expected a list of strings", where=record.where, field=name)
        return "\n\n".join(value) or None
    return value


def _level(record: Record, label: str, name: str | None) -> int | None:
    if not name:
        return None
    value = _field(record, label, name, (str, int), required=False)
    if value is None or isinstance(value, int):
        return value
    match = _LEVEL_RE.match(value)
    return int(match.group(1)) if match else None  # MATH has two "Level ?" rows: unknown, not an error


def _source_id(record: Record, label: str, spec: ProblemSourceSpec) -> str | None:
    if not spec.id:
        return None
    names = [spec.id] if isinstance(spec.id, str) else spec.id
    parts = [_field(record, label, n, (str, int), required=True) for n in names]
    return ":".join(str(p) for p in parts)


def build_problems(
    records: Iterable[Record], spec: ProblemSourceSpec, *, source: str, label: str, keep_missing_answers: bool = True
) -> tuple[pa.Table, ProblemStats]:
    """Validate records and map them onto the problem schema.

    Inputs: `records` from `readers`; `spec`, the source's field mapping; `source`, the source
    name stored in each row and hashed into `problem_id`; `label`, the file or dataset name used in
    error messages; `keep_missing_answers`, whether rows without a reference answer are kept.
    Output: (table with PROBLEM_SCHEMA, stats). Raises `InputError` naming the location and field
    for a missing or wrongly typed field and for a source id that occurs twice. A question that
    repeats (same normalized text) keeps its first row; later ones are dropped and counted. Last,
    the source's reference-answer corrections (`configs/corrections/<source>.yaml`, when it
    exists; `sources.corrections`) are applied and counted in the stats.
    """
    stats = ProblemStats()
    rows: list[dict[str, Any]] = []
    seen_ids: dict[str, str] = {}
    seen_problems: set[str] = set()
    for record in records:
        stats.rows_read += 1
        question = _question(record, label, spec)
        sid = _source_id(record, label, spec)
        if sid is not None:
            if sid in seen_ids:
                raise InputError(
                    label, f"duplicate id {sid!r} (first at {seen_ids[sid]})", where=record.where, field=str(spec.id)
                )
            seen_ids[sid] = record.where
        answer = _reference_answer(record, label, spec)
        solution = _solution(record, label, spec.solution) if spec.solution else None
        subject = _field(record, label, spec.subject, (str,), required=False) if spec.subject else None
        license_ = (
            _field(record, label, spec.license_field, (str,), required=False) if spec.license_field else spec.license
        )
        level = _level(record, label, spec.level)
        if answer is None:
            stats.missing_answer += 1
            if not keep_missing_answers:
                stats.dropped_missing_answer += 1
                continue
        pid = problem_id(source, question)
        if pid in seen_problems:
            stats.dropped_duplicate_question += 1
            continue
        seen_problems.add(pid)
        rows.append(
            {
                "problem_id": pid,
                "source": source,
                "split": spec.split,
                "question": question,
                "reference_answer": answer,
                "reference_solution": solution,
                "level": level,
                "subject": subject,
                "license": license_,
                "origin": "seed",
                "parent_problem_id": None,
                "method": None,
                "method_params_hash": None,
                "source_id": sid,
                "source_record": f"{label} {record.where}",
            }
        )
    stats.rows_written = len(rows)
    table, corrected = apply_corrections(
        pa.Table.from_pylist(rows, schema=PROBLEM_SCHEMA), load_corrections(corrections_path(source), source)
    )
    for key, value in corrected.items():
        setattr(stats, key, value)
    return table, stats
