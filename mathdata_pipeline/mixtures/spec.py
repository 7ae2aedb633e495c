"""Mixture specs (`configs/mixtures/<name>.yaml`): which candidates, how QaDS selects them, and the
composition of the final mixture. One file = one partition of `selections` and `mixture`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.sources.readers import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InfluencePrune(_Strict):
    """Prune selected reasoning rows by `influence_scores`: `fraction` in [0, 1); rule low_benefit |
    high_harm | combined (METHODS.md §5.4)."""

    fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    rule: Literal["low_benefit", "high_harm", "combined"] = "combined"


class KindSpec(_Strict):
    """QaDS settings of one kind of rows (reasoning or general).

    `selection_ratio`: share of candidates to keep (reasoning: the budget; general: a cap, the
    budget follows `general_share`). `combine_rule`: `filter_then_kcenter` keeps the top
    `quality_keep_ratio` by quality then runs k-center greedy to the budget; `weighted` picks
    argmax(min-distance + weight * quality) each step; `random` draws the budget uniformly at random
    (seeded by the spec's `seed`; quality and embeddings unused), the baseline a QaDS selection of
    the same size is compared with. `per_source_quota`: max rows per source.
    """

    sources: list[str] = Field(default_factory=list)
    origins: list[str] = Field(default_factory=list)
    selection_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    combine_rule: Literal["filter_then_kcenter", "weighted", "random"] = "filter_then_kcenter"
    quality_keep_ratio: float = Field(default=0.7, gt=0.0, le=1.0)
    weight: float = 0.5
    per_source_quota: dict[str, int] = Field(default_factory=dict)
    influence_prune: InfluencePrune = Field(default_factory=InfluencePrune)


class MixtureSpec(_Strict):
    """A whole mixture: reasoning and general selection, the general share and its tolerance."""

    description: str = ""
    seed: int = 0
    reasoning: KindSpec
    general: KindSpec = Field(default_factory=lambda: KindSpec(selection_ratio=0.0))
    general_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    tolerance: float = Field(default=0.02, ge=0.0)

    def config_hash(self) -> str:
        """A short hash of the whole spec (goes into the manifest and every row)."""
        return stable_hash(json.dumps(self.model_dump(), sort_keys=True), length=12)


def mixtures_dir() -> Path:
    """`<config_dir>/mixtures`."""
    return config_dir() / "mixtures"


def mixture_names(folder: Path | None = None) -> list[str]:
    """The spec names (file stems) in the mixtures folder, sorted."""
    folder = folder or mixtures_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_mixture_spec(name: str, folder: Path | None = None) -> MixtureSpec:
    """Parse `<folder>/<name>.yaml`; raises InputError naming the file and field when invalid."""
    path = (folder or mixtures_dir()) / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), f"cannot read mixture spec ({exc})") from exc
    try:
        return MixtureSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(str(path), first["msg"], field=".".join(str(p) for p in first["loc"])) from exc
