"""The comparisons file (`configs/comparisons.yaml`): which pairs of mixture specs
`mixture_comparison` compares, and the claim each pair tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mathdata_pipeline.common.names import check_name
from mathdata_pipeline.sources.readers import InputError

BASE = "base"
PREVIOUS_SUFFIX = "@previous"


class Comparison(BaseModel):
    """One pair: `a` (a mixture spec) against `b` (a spec, `base`, or `<spec>@previous`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    a: str
    b: str
    claim: str = ""

    @field_validator("name", "a")
    @classmethod
    def _a_name(cls, value: str) -> str:
        return check_name(value, what="comparison or spec")

    @field_validator("b")
    @classmethod
    def _b_side(cls, value: str) -> str:
        if value != BASE:
            check_name(value.removesuffix(PREVIOUS_SUFFIX), what="spec")
        return value

    def specs(self) -> list[str]:
        """The mixture specs whose scores this comparison reads."""
        b = self.b.removesuffix(PREVIOUS_SUFFIX)
        return [self.a] if self.b == BASE or b == self.a else [self.a, b]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    comparisons: list[Comparison]


def load_comparisons(path: str | Path, only: Sequence[str] = ()) -> list[Comparison]:
    """The comparisons in `path`, or those named in `only` (in the file's order).

    Raises InputError naming the file and the field when it does not validate, a name repeats,
    a pair compares a spec with itself, or `only` names a comparison that is not in the file.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        comparisons = _File.model_validate(raw).comparisons
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(str(path), f"cannot read comparisons ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(str(path), first["msg"], field=".".join(str(p) for p in first["loc"])) from exc
    names = [c.name for c in comparisons]
    for i, comparison in enumerate(comparisons):
        where = f"comparisons.{i}"
        if names.index(comparison.name) != i:
            raise InputError(str(path), f"comparison {comparison.name!r} appears twice", field=f"{where}.name")
        if comparison.a == comparison.b:
            raise InputError(str(path), f"{comparison.name}: compares {comparison.a} with itself", field=f"{where}.b")
    missing = sorted(set(only) - set(names))
    if missing:
        raise InputError(str(path), f"no comparison named {', '.join(missing)}; known: {', '.join(names)}")
    return [c for c in comparisons if not only or c.name in only]
