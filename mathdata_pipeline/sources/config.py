"""The sources configuration (`configs/sources.yaml`): what each dataset is and where it lives.

A source is read from, in order: its explicit `path`; its `local` path under the data directory
(`MATHDATA_DATA_DIR`, default `../shared/data` when that exists); its Hugging Face id. Adding a
seed source is a new entry in the file, not code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mathdata_pipeline.common.names import InvalidName, check_name
from mathdata_pipeline.common.paths import REPO_ROOT, config_dir
from mathdata_pipeline.sources.readers import (
    DEFAULT_LIMITS,
    InputError,
    ReadLimits,
    Record,
    read_hf_dataset,
    read_records,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubLocation(_Strict):
    """A Hugging Face dataset: id, optional config name, split, data_dir and revision."""

    id: str
    config: str | None = None
    split: str = "train"
    data_dir: str | None = None
    revision: str | None = None


class AnswerRule(_Strict):
    """How to find the reference answer: after `####` (gsm8k), last `\\boxed{}` (boxed), or a field."""

    style: Literal["gsm8k", "boxed", "field"]
    field: str


class _Located(_Strict):
    path: str | None = None
    local: str | None = None
    hf: HubLocation | None = None
    license: str | None = None


class ProblemSourceSpec(_Located):
    """Field mapping of a math dataset onto the problem schema (see configs/sources.yaml)."""

    split: str = "train"
    question: str | list[str]
    solution: str | None = None
    answer: AnswerRule | None = None
    id: str | list[str] | None = None
    level: str | None = None
    subject: str | None = None
    license_field: str | None = None


class GeneralSetSpec(_Located):
    """A general instruction set and the converter that turns its records into chat messages."""

    format: Literal["hh_rlhf", "self_instruct", "mmlu", "messages"]
    evaluation_split: bool = Field(
        default=False, description="an evaluation split: never a training candidate unless a mixture spec allows it"
    )


class SourcesConfig(_Strict):
    """All datasets the pipeline reads: seed sources, evaluation benchmarks, general sets."""

    seed_sources: dict[str, ProblemSourceSpec] = Field(min_length=1)
    benchmarks: dict[str, ProblemSourceSpec] = Field(default_factory=dict)
    general_sets: dict[str, GeneralSetSpec] = Field(default_factory=dict)


def load_sources_config(path: Path | str | None = None) -> SourcesConfig:
    """Parse and validate the sources file (default `<config_dir>/sources.yaml`).

    Raises `InputError` naming the file and the offending key when the YAML is malformed or
    does not match the schema, and naming the file, the section and the name when a source name
    is not a valid name (`common.names.check_name`: names become partition keys and paths).
    """
    path = Path(path) if path else config_dir() / "sources.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), f"cannot read sources config ({exc})") from exc
    try:
        config = SourcesConfig.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InputError(str(path), first["msg"], field=field) from exc
    for section, what in (
        ("seed_sources", "seed source"),
        ("benchmarks", "benchmark"),
        ("general_sets", "general set"),
    ):
        for name in getattr(config, section):
            try:
                check_name(name, what=what)
            except InvalidName as exc:
                raise InputError(str(path), str(exc), field=section) from exc
    return config


def data_dir() -> Path | None:
    """The local data folder: `MATHDATA_DATA_DIR`, else `../shared/data` beside the repo if present."""
    env = os.environ.get("MATHDATA_DATA_DIR")
    if env:
        return Path(env)
    default = REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def locate(spec: _Located, *, base: Path | None = None, config_base: Path | None = None) -> Path | HubLocation:
    """Where a source's records come from: a local file path or a Hugging Face location.

    Inputs: the spec; `base`, the data folder (default `data_dir()`); `config_base`, the folder
    relative `path:` entries are resolved against (default `config_dir()`).
    Raises `InputError` when there is neither a local file nor a hub id.
    """
    if spec.path:
        path = Path(spec.path)
        return path if path.is_absolute() else (config_base or config_dir()) / path
    base = base if base is not None else data_dir()
    if spec.local and base is not None and (base / spec.local).exists():
        return base / spec.local
    if spec.hf is not None:
        return spec.hf
    where = str(base / spec.local) if (spec.local and base is not None) else "(no data folder set)"
    raise InputError(
        where,
        "no local copy found and no Hugging Face id configured; "
        "set MATHDATA_DATA_DIR or add `path:`/`hf:` to the source",
    )


def open_source(
    spec: _Located, *, limits: ReadLimits = DEFAULT_LIMITS, **locate_kwargs
) -> tuple[str, Iterator[Record]]:
    """Open a source for reading: returns (label used in messages, iterator of records). `limits`
    bounds record and file sizes of local files; `locate_kwargs` go to `locate`."""
    where = locate(spec, **locate_kwargs)
    if isinstance(where, Path):
        # A file found under the data folder is named by its relative path, so tables built on
        # different machines from the same data are identical.
        label = spec.local if (spec.local and not spec.path and where.as_posix().endswith(spec.local)) else str(where)
        return label, read_records(where, limits)
    label = f"hf://{where.id}"
    return label, read_hf_dataset(
        where.id, config=where.config, split=where.split, data_dir=where.data_dir, revision=where.revision
    )
