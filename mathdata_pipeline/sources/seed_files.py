"""Seed files dropped into the watched folder: discovery (with the files whose names cannot become
a seed source, and why) and field-mapping detection from a sample."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from mathdata_pipeline.common.names import InvalidName, check_name
from mathdata_pipeline.sources.config import AnswerRule, ProblemSourceSpec, data_dir
from mathdata_pipeline.sources.readers import DEFAULT_LIMITS, InputError, ReadLimits, first_record

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


@dataclass(frozen=True)
class RefusedSeedFile:
    """A dropped file that does not become a seed source: its path, the source name it would have
    had, and why (a message naming the file)."""

    path: Path
    name: str
    reason: str


@dataclass(frozen=True)
class SeedDrop:
    """What the seed folder holds: `files` {source name: path}, and the `refused` files."""

    files: dict[str, Path]
    refused: list[RefusedSeedFile]


def seed_source_name(file_name: str) -> str | None:
    """The seed-source name of a dropped file: the file name without its suffix, lower-cased, with
    characters other than [a-z0-9_] replaced by `_`; None when the file has no seed suffix."""
    suffix = next((s for s in SEED_FILE_SUFFIXES if file_name.endswith(s)), None)
    return re.sub(r"[^a-z0-9_]", "_", file_name[: -len(suffix)].lower()) if suffix else None


def scan_seed_files(folder: Path | None, configured: Iterable[str] = ()) -> SeedDrop:
    """The seed files in `folder` (regular, not hidden files with a seed suffix; sidecar `.yaml`
    files aside). A file is refused, never silently dropped, when its source name is not a valid name
    (`common.names.check_name`), when another file gives the same name (`My-File` and `my_file`:
    all of them are refused, each naming the others), or when a source of that name is
    `configured` in sources.yaml (the configured one stays)."""
    if folder is None or not folder.is_dir():
        return SeedDrop({}, [])
    by_name: dict[str, list[Path]] = defaultdict(list)
    refused: list[RefusedSeedFile] = []
    configured = set(configured)
    for path in sorted(folder.iterdir()):
        name = seed_source_name(path.name)
        if name is None or path.name.startswith(".") or not path.is_file():
            continue  # not a seed file, hidden (e.g. being copied in), or not a regular file
        try:
            by_name[check_name(name, what="seed source", where=str(path))].append(path)
        except InvalidName as exc:
            refused.append(RefusedSeedFile(path, name, f"{exc}; rename the file"))
    files = {}
    for name, paths in by_name.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p.name for p in paths if p != path)
                refused.append(
                    RefusedSeedFile(
                        path, name, f"{path}: {others} also becomes seed source {name!r}; rename all but one"
                    )
                )
        elif name in configured:
            reason = (
                f"{paths[0]}: seed source {name!r} is configured in sources.yaml, so this file is not read; rename it"
            )
            refused.append(RefusedSeedFile(paths[0], name, reason))
        else:
            files[name] = paths[0]
    return SeedDrop(files, sorted(refused, key=lambda r: r.path))


def spec_for_seed_file(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> ProblemSourceSpec:
    """The field mapping of a dropped seed file: a sidecar `<file>.yaml` (a seed-source entry as in
    sources.yaml, without location) when present, else detected from the first record (read as a
    sample: `readers.first_record`, within `limits`): the question
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
    first = first_record(path, limits)
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
