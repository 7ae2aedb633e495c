"""Seed files dropped into the watched folder: discovery and field-mapping detection."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from mathdata_pipeline.sources.config import AnswerRule, ProblemSourceSpec, data_dir
from mathdata_pipeline.sources.readers import InputError, read_records

SEED_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


_QUESTION_FIELDS = ("question", "problem", "query", "instruction")


_SOLUTION_FIELDS = ("solution", "response", "answer", "output")


def seed_drop_dir(base: Path | None = None) -> Path | None:
    """The folder watched for new seed files: `MATHDATA_SEED_DROP_DIR`, else `<data folder>/seeds`."""
    env = os.environ.get("MATHDATA_SEED_DROP_DIR")
    if env:
        return Path(env)
    base = base if base is not None else data_dir()
    return base / "seeds" if base is not None else None


def discover_seed_files(folder: Path | None) -> dict[str, Path]:
    """New seed files in `folder`: {source name: path}. The name is the file name without its
    suffix, lower-cased, with characters other than [a-z0-9_] replaced by `_`."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in SEED_FILE_SUFFIXES if path.name.endswith(s)), None)
        if suffix and path.is_file():
            found[re.sub(r"[^a-z0-9_]", "_", path.name[: -len(suffix)].lower())] = path
    return found


def spec_for_seed_file(path: Path) -> ProblemSourceSpec:
    """The field mapping of a dropped seed file: a sidecar `<file>.yaml` (a seed-source entry as in
    sources.yaml, without location) when present, else detected from the first record: the question
    is the first of question/problem/query/instruction; the solution the first of
    solution/response/answer/output; the answer follows `####` when the solution has it, else the
    last `\boxed{}`, else an `answer` field as it is. Raises InputError naming the file."""
    sidecar = path.with_name(path.name + ".yaml")
    if sidecar.is_file():
        try:
            raw = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
            return ProblemSourceSpec.model_validate({**raw, "path": str(path)})
        except (yaml.YAMLError, ValidationError) as exc:
            raise InputError(str(sidecar), f"invalid seed mapping ({exc})") from exc
    first = next(iter(read_records(path)), None)
    if first is None:
        raise InputError(str(path), "the seed file has no records")
    fields = first.data
    question = next((f for f in _QUESTION_FIELDS if isinstance(fields.get(f), str)), None)
    if question is None:
        raise InputError(
            str(path),
            f"no question field (looked for {', '.join(_QUESTION_FIELDS)}; add {path.name}.yaml)",
            where=first.where,
        )
    solution = next((f for f in _SOLUTION_FIELDS if isinstance(fields.get(f), str)), None)
    answer = None
    if solution and "####" in fields[solution]:
        answer = AnswerRule(style="gsm8k", field=solution)
    elif solution and "\\boxed" in fields[solution]:
        answer = AnswerRule(style="boxed", field=solution)
    elif "answer" in fields:
        answer = AnswerRule(style="field", field="answer")
    return ProblemSourceSpec(
        path=str(path), question=question, solution=solution, answer=answer, id="id" if "id" in fields else None
    )
