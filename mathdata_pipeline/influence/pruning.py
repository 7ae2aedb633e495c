"""The pruning decision of a mixture spec over its selected reasoning rows (METHODS.md §5.4): drop
rows of held-out validation problems, then a fraction of the scored rows by influence (s_C / s_I,
mean or max aggregate, difference or min fusion) or by a baseline score at the same pruned size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mathdata_pipeline.influence.scores import fuse_ranks, prune, prune_by_score

BASELINE_COLUMNS = {"perplexity": "perplexity", "embedding_similarity": "embedding_similarity", "random": "random"}


@dataclass(frozen=True)
class PruneDecision:
    """Per selected id: whether it is dropped, why ("" when kept) and the score that decided it
    (None when the id has no score)."""

    dropped: dict[str, bool]
    reasons: dict[str, str]
    scores: dict[str, float | None]
    counts: dict[str, int]


def _floats(rows: Sequence[dict], column: str) -> np.ndarray:
    return np.asarray([np.nan if r[column] is None else r[column] for r in rows], dtype=np.float64)


def decide_pruning(selected_ids: Sequence[str], scores: pa.Table, prune_spec) -> PruneDecision:
    """Which of the `selected_ids` a spec prunes.

    Inputs: the selected reasoning ids; the `influence_scores` table (SCORE_SCHEMA); the spec's
    `InfluencePrune` (fraction, by, rule, aggregate, fusion, keep). Held-out rows (`heldout`
    true) are always dropped; scored rows lose floor(fraction x scored) by the spec's score;
    rows without a score are kept. The recorded score is the fused rank (rule combined), s_C
    (low_benefit), s_I (high_harm) or the baseline's value. Output: a PruneDecision with counts `influence_scored`,
    `influence_unscored`, `influence_heldout` and `influence_pruned`.
    """
    by_id = {r["sample_id"]: r for r in scores.to_pylist()}
    held = [i for i in selected_ids if i in by_id and by_id[i]["heldout"]]
    scored = [i for i in selected_ids if i in by_id and not by_id[i]["heldout"]]
    rows = [by_id[i] for i in scored]
    dropped = {i: False for i in selected_ids}
    reasons = {i: "" for i in selected_ids}
    used: dict[str, float | None] = {i: None for i in selected_ids}
    for i in held:
        dropped[i], reasons[i] = True, "held out: its problem is in the influence validation set"
    spec = prune_spec
    if spec.by == "influence":
        suffix = "_max" if spec.aggregate == "max" else ""
        s_c, s_i = _floats(rows, f"s_correct{suffix}"), _floats(rows, f"s_incorrect{suffix}")
        keep, why = prune(scored, s_c, s_i, spec.fraction, rule=spec.rule, fusion=spec.fusion)
        value = {"low_benefit": s_c, "high_harm": s_i}.get(spec.rule)
        value = fuse_ranks(s_c, s_i, spec.fusion) if value is None else value
        label = f"influence ({spec.rule}, {spec.aggregate}, {spec.fusion})"
    else:
        value = _floats(rows, BASELINE_COLUMNS[spec.by])
        keep = prune_by_score(scored, value, spec.fraction, keep=spec.keep)
        label = f"{spec.by} (keep {spec.keep})"
        why = [f"{spec.by}={v:.4g} outside the kept {1 - spec.fraction:.0%}" for v in value]
    for j, sample in enumerate(scored):
        used[sample] = float(value[j])
        if not keep[j]:
            dropped[sample], reasons[sample] = True, f"pruned by {label}: {why[j]}"
    counts = {
        "influence_scored": len(scored),
        "influence_unscored": len(selected_ids) - len(scored) - len(held),
        "influence_heldout": len(held),
        "influence_pruned": int((~np.asarray(keep, dtype=bool)).sum()) if scored else 0,
    }
    return PruneDecision(dropped, reasons, used, counts)
