"""Mixture specs (`configs/mixtures/<name>.yaml`): which candidates, how QaDS selects them, and the
composition of the final mixture. One file = one partition of `selections` and `mixture` (a file
whose name is not a valid name gets a placeholder partition that fails naming the file)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mathdata_pipeline.common.names import InvalidName, check_name
from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.mixtures.licenses import HUB_LICENSES, NOT_A_LICENSE, normalize_license
from mathdata_pipeline.sources.readers import InputError

Origin = Literal["seed", "augmented", "synthesized", "open", "general"]
DartStrategy = Literal["primary", "uniform", "prop2diff", "vrt", "band"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InfluencePrune(_Strict):
    """Prune the selected reasoning rows by a score of `influence_scores` (METHODS.md §5.4, baselines in its step 7).

    `fraction` of the scored selected rows is dropped (floor), and in a pruning spec every
    selected row whose problem is in the influence validation set V is dropped as held out.
    `by`: "influence" (s_C / s_I) or a baseline at the same pruned size: "perplexity",
    "embedding_similarity", "random". Influence: `rule` low_benefit (lowest s_C) | high_harm
    (highest s_I) | combined (lowest fused rank); `aggregate` over V: mean | max (LESS's max over
    validation problems); `fusion` of the two ranks: difference (r_C - r_I) | min (min(r_C, 1 - r_I)).
    Baselines: `keep` high | low | middle values of the score (perplexity: low or middle).
    """

    fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description="share of the scored selected rows to drop")
    by: Literal["influence", "perplexity", "embedding_similarity", "random"] = "influence"
    rule: Literal["low_benefit", "high_harm", "combined"] = "combined"
    aggregate: Literal["mean", "max"] = "mean"
    fusion: Literal["difference", "min"] = "difference"
    keep: Literal["high", "low", "middle"] = "high"


class KindSpec(_Strict):
    """QaDS settings of one kind of rows (reasoning or general).

    `selection_ratio`: share of the eligible candidates to keep (reasoning: the budget; general: a
    cap, the budget follows `general_share`). `combine_rule`: `filter_then_kcenter` keeps the top
    `quality_keep_ratio` by quality then runs k-center greedy to the budget; `weighted` picks
    argmax(min-distance + weight * quality) each step; `random` draws the budget uniformly at random
    (seeded by the spec's `seed`; quality and embeddings unused), the baseline a QaDS selection of
    the same size is compared with. All three honour `per_source_quota` (max rows
    per source). `quality` says how the measured win rate (`q_label`, labelled rows) and the
    scorer's prediction (`q_pred`, every row) combine into the quality the rule uses.
    `evaluation_sources`: sources marked as evaluation splits that this spec may nevertheless
    train on (a warning goes into the selections metadata); any other evaluation split is never
    a candidate.
    """

    sources: list[str] = Field(default_factory=list, description="sources to draw from; empty = all")
    origins: list[Origin] = Field(
        default_factory=list,
        description="origins of the rows' questions to draw from: seed (a seed problem, answered by its reference "
        "or by DART samples), augmented (MuggleMath), synthesized (ScaleQuest), open (candidate pools), "
        "general; empty = all",
    )
    selection_ratio: float = Field(default=0.5, ge=0.0, le=1.0, description="share of eligible candidates kept")
    combine_rule: Literal["filter_then_kcenter", "weighted", "random"] = "filter_then_kcenter"
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


class LicenseRules(_Strict):
    """The licenses a mixture accepts. `allow`: Hugging Face license identifiers (e.g. [mit,
    apache-2.0, cc-by-4.0]); None (the default) accepts every known license. A row without a known
    license fails the `licenses_allowed` check either way."""

    allow: list[str] | None = None

    @field_validator("allow")
    @classmethod
    def _hub_identifiers(cls, allow: list[str] | None) -> list[str] | None:
        if allow is None:
            return None
        licenses = [normalize_license(name) or "" for name in allow]
        wrong = [name for name in licenses if name not in HUB_LICENSES or name in NOT_A_LICENSE]
        if wrong:
            raise ValueError(f"not a Hugging Face license identifier: {', '.join(map(repr, wrong))}")
        return licenses


class MixtureSpec(_Strict):
    """A whole mixture: reasoning and general selection, the general share and its tolerance, the
    licenses it accepts, and which DART strategy's selection its DART rows come from."""

    description: str = ""
    seed: int = 0
    dart_strategy: DartStrategy = Field(
        default="primary",
        description="the DART rows (method dart) this mixture may draw: those the named strategy's curation keeps "
        "(a rejection_samples run serving it, see its serve_strategies), or primary: those of each run's primary "
        "`strategy`, as before runs served several; DART rows of other strategies are no candidates",
    )
    reasoning: KindSpec
    general: KindSpec = Field(default_factory=lambda: KindSpec(selection_ratio=0.0))
    general_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    tolerance: float = Field(default=0.02, ge=0.0)
    licenses: LicenseRules = Field(default_factory=LicenseRules)

    def config_hash(self) -> str:
        """A short hash of the whole spec (goes into the manifest and every row). `dart_strategy`
        enters it only when it is not the default, so specs written before it keep their hash."""
        fields = self.model_dump(exclude={"dart_strategy"} if self.dart_strategy == "primary" else set())
        return stable_hash(json.dumps(fields, sort_keys=True), length=12)


def mixtures_dir() -> Path:
    """`<config_dir>/mixtures`."""
    return config_dir() / "mixtures"


def spec_files(folder: Path | None = None) -> dict[str, Path]:
    """{partition key: spec file} of the mixtures folder. The key is the file stem when it is a
    valid name (`common.names.check_name`); a file whose stem is not (`v2...draft.yaml`,
    `my spec.yaml`) gets the placeholder key `invalid-<stem letters>-<hash>`, whose load fails
    naming the file, so one badly named file never stops the code location from loading."""
    files = {}
    for path in sorted((folder or mixtures_dir()).glob("*.yaml")):
        try:
            files[check_name(path.stem, what="mixture spec")] = path
        except InvalidName:
            letters = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:24].strip("-")
            files[f"invalid-{letters + '-' if letters else ''}{stable_hash(path.stem, length=8)}"] = path
    return files


def mixture_names(folder: Path | None = None) -> list[str]:
    """The partition keys of the spec files in the mixtures folder, sorted (see `spec_files`)."""
    return sorted(spec_files(folder))


def load_mixture_spec(name: str, folder: Path | None = None) -> MixtureSpec:
    """Parse the spec file of partition `name` (`<folder>/<name>.yaml`); raises InputError naming
    the file and field when invalid, naming the file when its name is not a valid spec name, and
    naming the folder when no spec file has that key."""
    folder = folder or mixtures_dir()
    path = spec_files(folder).get(name)
    if path is None:
        raise InputError(
            str(folder), f"no mixture spec {name!r} (the spec files are {', '.join(mixture_names(folder))})"
        )
    if path.stem != name:
        try:
            check_name(path.stem, what="mixture spec", where=str(path))
        except InvalidName as exc:
            raise InputError(str(path), f"{str(exc).removeprefix(f'{path}: ')}; rename the file") from exc
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), f"cannot read mixture spec ({exc})") from exc
    try:
        return MixtureSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(str(path), first["msg"], field=".".join(str(p) for p in first["loc"])) from exc
