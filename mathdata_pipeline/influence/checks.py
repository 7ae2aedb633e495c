"""The blocking check of `influence_scores`: V is held out (no scored training row comes from a
problem of the validation set, directly or through a rewrite of it)."""

import dagster as dg

HELDOUT_CHECK = "validation_held_out"

HELDOUT_CHECK_SPEC = dg.AssetCheckSpec(
    HELDOUT_CHECK,
    asset="influence_scores",
    blocking=True,
    description="No scored training row shares a (root) problem with the validation set V.",
)


def heldout_check(shared: list[str]) -> dg.AssetCheckResult:
    """The check's result from `examples.shared_problems` (descriptions of the offending rows):
    passes when there are none, else fails with ERROR severity naming the first ten."""
    return dg.AssetCheckResult(
        check_name=HELDOUT_CHECK,
        asset_key="influence_scores",
        passed=not shared,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(shared[:10]) or "ok: V is held out from every scored training row",
        metadata={"shared_rows": len(shared)},
    )
