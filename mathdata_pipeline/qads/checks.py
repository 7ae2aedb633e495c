"""The blocking check on `selections`: no row of an evaluation split is selected unless the spec
allows that source explicitly (then it passes with the count in its metadata)."""

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.decontamination.checks import partitioned_check_spec
from mathdata_pipeline.mixtures.spec import MixtureSpec

EVALUATION_CHECK = "no_evaluation_split"
EVALUATION_CHECK_SPEC = partitioned_check_spec(
    EVALUATION_CHECK,
    asset="selections",
    partitions_def=mixture_specs,
    blocking=True,
    description="No selected row comes from a source marked as an evaluation split, unless the spec "
    "lists that source under evaluation_sources.",
)


def evaluation_split_check(decisions: pa.Table, spec: MixtureSpec) -> dg.AssetCheckResult:
    """Fail when a selected row of `decisions` is from an evaluation split its kind's spec does
    not list in `evaluation_sources`; name those sources and counts."""
    allowed = {"reasoning": set(spec.reasoning.evaluation_sources), "general": set(spec.general.evaluation_sources)}
    rows = decisions.select(["kind", "source", "selected", "evaluation_split"]).to_pylist()
    flagged = [r for r in rows if r["selected"] and r["evaluation_split"]]
    forbidden: dict[str, int] = {}
    for r in flagged:
        if r["source"] not in allowed.get(r["kind"], set()):
            key = f"{r['kind']}/{r['source']}"
            forbidden[key] = forbidden.get(key, 0) + 1
    described = "; ".join(f"{key}: {count} rows" for key, count in sorted(forbidden.items()))
    return dg.AssetCheckResult(
        check_name=EVALUATION_CHECK,
        asset_key="selections",
        passed=not forbidden,
        description=f"evaluation-split rows selected without the spec's consent: {described}" if forbidden else "ok",
        metadata={"evaluation_rows_selected": len(flagged), "forbidden_rows": sum(forbidden.values())},
    )
