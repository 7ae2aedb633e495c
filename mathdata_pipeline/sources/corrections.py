"""Reference-answer corrections for seed problems, keyed by problem_id (configs/corrections/).

A correction file names its source and lists entries `{problem_id, was, answer, solution?, why}`.
`apply_corrections` changes a row's `reference_answer` from `was` to `answer` and its worked
solution (the given `solution`, else the final `#### was` line rewritten), and counts what it did:
a correction whose row is absent, or whose row no longer says `was`, is counted and left alone,
never applied to a different label.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from mathdata_pipeline.common.paths import config_dir


@dataclass(frozen=True)
class Correction:
    """One corrected label: the row, the published answer, the corrected answer and solution."""

    problem_id: str
    was: str
    answer: str
    solution: str | None
    why: str


def corrections_path(source: str) -> Path:
    """`<config dir>/corrections/<source>.yaml` (it may not exist: a source without corrections)."""
    return config_dir() / "corrections" / f"{source}.yaml"


def load_corrections(path: Path, source: str) -> list[Correction]:
    """The corrections in `path` for `source` ([] when the file does not exist).

    Raises ValueError naming the file, entry and field for a file of another source, a missing or
    non-text field, or a problem_id listed twice.
    """
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if data.get("source") != source:
        raise ValueError(f"{path}: field 'source' is {data.get('source')!r}, expected {source!r}")
    entries = data.get("corrections") or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: field 'corrections' must be a list")
    corrections, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"{path}: corrections[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
        for field in ("problem_id", "was", "answer", "why"):
            if not isinstance(entry.get(field), str) or not entry[field].strip():
                raise ValueError(f"{where}, field '{field}': expected non-empty text, got {entry.get(field)!r}")
        if entry.get("solution") is not None and not isinstance(entry["solution"], str):
            raise ValueError(f"{where}, field 'solution': expected text, got {entry['solution']!r}")
        if entry["problem_id"] in seen:
            raise ValueError(f"{where}, field 'problem_id': {entry['problem_id']} is listed twice")
        seen.add(entry["problem_id"])
        corrections.append(
            Correction(entry["problem_id"], entry["was"], entry["answer"], entry.get("solution"), entry["why"])
        )
    return corrections


def apply_corrections(table: pa.Table, corrections: list[Correction]) -> tuple[pa.Table, dict[str, int]]:
    """`table` (problem rows) with the corrections applied, and counts. A corrected row's
    `source_record` gains "; reference answer corrected (was <was>)" so its history shows it.

    Counts: `corrections_applied`, `corrections_solution_rewritten`, `corrections_not_found` (no
    row with that problem_id) and `corrections_stale` (the row's answer is no longer `was`, so the
    data changed since the correction was written; the row is left as it is).
    """
    counts: Counter[str] = Counter(
        corrections_applied=0, corrections_not_found=0, corrections_stale=0, corrections_solution_rewritten=0
    )
    if not corrections:
        return table, dict(counts)
    ids = table.column("problem_id").to_pylist()
    answers = table.column("reference_answer").to_pylist()
    solutions = table.column("reference_solution").to_pylist()
    records = table.column("source_record").to_pylist()
    position = {pid: i for i, pid in enumerate(ids)}
    for correction in corrections:
        row = position.get(correction.problem_id)
        if row is None:
            counts["corrections_not_found"] += 1
            continue
        if answers[row] != correction.was:
            counts["corrections_stale"] += 1
            continue
        answers[row] = correction.answer
        records[row] = f"{records[row] or ''}; reference answer corrected (was {correction.was})".lstrip("; ")
        counts["corrections_applied"] += 1
        solution = correction.solution or _rewrite_final_line(solutions[row], correction.was, correction.answer)
        if solution is not None and solution != solutions[row]:
            solutions[row] = solution
            counts["corrections_solution_rewritten"] += 1
    for name, values in (("reference_answer", answers), ("reference_solution", solutions), ("source_record", records)):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.string()))
    return table, dict(counts)


def _rewrite_final_line(solution: str | None, was: str, answer: str) -> str | None:
    """`solution` with its final `#### was` line saying `#### answer` (unchanged without one)."""
    if solution is None:
        return None
    return re.sub(rf"####[ \t]*{re.escape(was)}[ \t]*$", f"#### {answer}", solution.rstrip(), count=1)
