"""Mixture specs (`configs/mixtures/<name>.yaml`): which candidates, how QaDS selects them, and the
composition of the final mixture. One file = one partition of `selections` and `mixture`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

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

    `selection_ratio`: share of the eligible candidates to keep (reasoning: the budget; general: a
    cap, the budget follows `general_share`). `combine_rule`: `filter_then_kcenter` keeps the top
    `quality_keep_ratio` by quality then runs k-center greedy to the budget; `weighted` picks
    argmax(min-distance + weight * quality) each step. Both honour `per_source_quota` (max rows
    per source). `quality` says how the measured win rate (`q_label`, labelled rows) and the
    scorer's prediction (`q_pred`, every row) combine into the quality the rule uses.
    `evaluation_sources`: sources marked as evaluation splits that this spec may nevertheless
    train on (a warning goes into the selections metadata); any other evaluation split is never
    a candidate.
    """

    sources: list[str] = Field(default_factory=list, description="sources to draw from; empty = all")
    origins: list[str] = Field(
        default_factory=list,
        description="origins to draw from (seed, dart, mugglemath, synthesized, open, general); empty = all",
    )
    selection_ratio: float = Field(default=0.5, ge=0.0, le=1.0, description="share of eligible candidates kept")
    combine_rule: Literal["filter_then_kcenter", "weighted"] = "filter_then_kcenter"
    quality_keep_ratio: float = Field(
        default=0.7, gt=0.0, le=1.0, description="filter_then_kcenter: share kept by quality before k-center"
    )
    weight: float = Field(default=0.5, ge=0.0, description="weighted: lambda, the weight of quality against distance")
    quality: Literal["percentile", "predicted", "measured_else_predicted"] = Field(
        default="percentile",
        description="percentile: measured rows ranked among measured rows, the rest among predicted ones (one "
        "scale, neither kind favoured); predicted: the scorer's prediction for every row; measured_else_predicted: "
        "the measured win rate where there is one (its spread is wider than the predictions')",
    )
    per_source_quota: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="max rows per source"
    )
    evaluation_sources: list[str] = Field(
        default_factory=list, description="evaluation-split sources this spec may train on anyway (warned)"
    )
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
