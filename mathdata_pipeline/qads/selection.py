"""QaDS decisions for one kind of rows: quality filter, k-center greedy to a budget, quotas.

Scores (embeddings, quality, influence) are inputs computed elsewhere; this module only decides,
and records for every candidate whether it was selected and why (DESIGN.md: scores separate from
decisions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.mixtures.spec import KindSpec, MixtureSpec
from mathdata_pipeline.qads.kcenter import KCenterResult, kcenter_greedy

DECISION_SCHEMA = pa.schema(
    [
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("quality", pa.float32()),
        pa.field("selected", pa.bool_(), nullable=False),
        pa.field("selection_rank", pa.int32()),
        pa.field("min_distance", pa.float32()),
        pa.field("influence_score", pa.float32()),
        pa.field("decision", pa.string(), nullable=False),
    ]
)


@dataclass
class Candidates:
    """The rows of one kind to select from: ids, sources, origins, quality (n,), embeddings (n, d)."""

    ids: list[str]
    sources: list[str]
    origins: list[str]
    quality: np.ndarray
    embeddings: np.ndarray


def _quality_survivors(quality: np.ndarray, ids: list[str], keep_ratio: float) -> np.ndarray:
    """Indices of the top `keep_ratio` share by quality (at least one), ties broken by id."""
    keep = max(1, int(round(keep_ratio * len(ids)))) if ids else 0
    order = sorted(range(len(ids)), key=lambda i: (-float(quality[i]), ids[i]))
    return np.sort(np.asarray(order[:keep], dtype=np.int64))


def _weighted_greedy(x: np.ndarray, quality: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """argmax(min-distance + weight·quality) each step (the weight is folded into `quality`)."""
    n = len(x)
    first = int(np.random.default_rng(seed).integers(n))
    picks, dists = [first], [np.inf]
    min_d = np.linalg.norm(x - x[first], axis=1)
    for _ in range(k - 1):
        score = np.where(np.isin(np.arange(n), picks), -np.inf, min_d + quality)
        nxt = int(np.argmax(score))
        picks.append(nxt)
        dists.append(float(min_d[nxt]))
        min_d = np.minimum(min_d, np.linalg.norm(x - x[nxt], axis=1))
    return np.asarray(picks, dtype=np.int64), np.asarray(dists, dtype=np.float32)


def _random_picks(candidates: Candidates, quotas: dict[str, int], budget: int, seed: int) -> np.ndarray:
    """Up to `budget` candidate indices in a seeded random order (a hash of seed and id, so adding
    or reordering candidates does not reshuffle the others), at most `quotas[source]` per source."""
    order = sorted(range(len(candidates.ids)), key=lambda i: stable_hash("random", str(seed), candidates.ids[i]))
    taken: dict[str, int] = {}
    picks: list[int] = []
    for i in order:
        if len(picks) == budget:
            break
        source = candidates.sources[i]
        if taken.get(source, 0) < quotas.get(source, budget):
            taken[source] = taken.get(source, 0) + 1
            picks.append(i)
    return np.asarray(picks, dtype=np.int64)


def select(
    candidates: Candidates,
    spec: KindSpec,
    budget: int,
    *,
    kind: str,
    seed: int,
    kcenter: Callable[..., KCenterResult] = kcenter_greedy,
) -> pa.Table:
    """Decide which candidates are selected.

    Inputs: the candidates; the kind's spec (combine rule, keep ratio, weight, quotas); `budget`,
    the number of rows to select (capped by what the rules allow); `kind` (reasoning | general);
    `seed` for the k-center start (and the order of the `random` rule); `kcenter`, the selector
    (default `kcenter_greedy`; assets pass the selector resource's `select`). Output: one
    DECISION_SCHEMA row per candidate, in input order; `selection_rank` is the pick order
    (0-based) and `min_distance` the distance to the nearest earlier pick when it was chosen (inf
    for the first; null for the `random` rule).
    """
    n = len(candidates.ids)
    rank = np.full(n, -1, dtype=np.int64)
    min_distance = np.full(n, np.nan, dtype=np.float32)
    decision = ["not selected: budget reached"] * n
    if n and budget > 0:
        if spec.combine_rule == "filter_then_kcenter":
            pool = _quality_survivors(candidates.quality, candidates.ids, spec.quality_keep_ratio)
            threshold = float(candidates.quality[pool].min()) if len(pool) else 0.0
            in_pool = np.zeros(n, dtype=bool)
            in_pool[pool] = True
            for i in np.flatnonzero(~in_pool):
                decision[i] = (
                    f"not selected: quality {candidates.quality[i]:.3f} below the kept "
                    f"{spec.quality_keep_ratio:.0%} (>= {threshold:.3f})"
                )
            groups = np.asarray([candidates.sources[i] for i in pool], dtype=object)
            quotas = spec.per_source_quota or None
            allowed = (
                sum(min(spec.per_source_quota.get(g, len(pool)), int((groups == g).sum())) for g in set(groups))
                if quotas
                else len(pool)
            )
            k = min(budget, allowed)
            result = kcenter(
                candidates.embeddings[pool], k, seed=seed, groups=groups if quotas else None, quotas=quotas
            )
            picks, dists = pool[result.indices], result.min_distance
        elif spec.combine_rule == "random":
            picks = _random_picks(candidates, spec.per_source_quota, budget, seed)
            dists = np.full(len(picks), np.nan, dtype=np.float32)
        else:
            picks, dists = _weighted_greedy(
                candidates.embeddings, spec.weight * candidates.quality, min(budget, n), seed
            )
        rank[picks] = np.arange(len(picks))
        min_distance[picks] = dists
        how = "random pick" if spec.combine_rule == "random" else "pick"
        for order, i in enumerate(picks):
            decision[i] = f"selected: {how} {order + 1} of {len(picks)}"
    return pa.table(
        {
            "candidate_id": candidates.ids,
            "kind": [kind] * n,
            "source": candidates.sources,
            "origin": candidates.origins,
            "quality": pa.array(candidates.quality.astype(np.float32), pa.float32()),
            "selected": pa.array(rank >= 0, pa.bool_()),
            "selection_rank": pa.array(np.where(rank >= 0, rank, 0).astype(np.int32), pa.int32(), mask=rank < 0),
            "min_distance": pa.array(min_distance, pa.float32(), mask=np.isnan(min_distance)),
            "influence_score": pa.nulls(n, pa.float32()),
            "decision": decision,
        },
        schema=DECISION_SCHEMA,
    )


def apply_influence_prune(
    decisions: pa.Table, scores: pa.Table, fraction: float, rule: str
) -> tuple[pa.Table, dict[str, int]]:
    """Prune the selected rows of `decisions` by influence (after QaDS, METHODS.md §5.4).

    Inputs: reasoning decisions; `influence_scores` rows (`sample_id`, `s_correct`,
    `s_incorrect`, `fused_rank`); `fraction` of the scored selected rows to drop; `rule`
    (low_benefit | high_harm | combined). Selected rows without a score are kept and counted.
    Output: (decisions with `selected`, `decision` and `influence_score` updated, counts).
    """
    from mathdata_pipeline.influence.scores import prune

    by_id = {r["sample_id"]: r for r in scores.to_pylist()}
    rows = decisions.to_pylist()
    chosen = [i for i, r in enumerate(rows) if r["selected"] and r["candidate_id"] in by_id]
    counts = {
        "influence_scored": len(chosen),
        "influence_unscored": sum(r["selected"] for r in rows) - len(chosen),
        "influence_pruned": 0,
    }
    for r in rows:
        if r["candidate_id"] in by_id:
            r["influence_score"] = by_id[r["candidate_id"]]["fused_rank"]
    if chosen and fraction > 0:
        ids = [rows[i]["candidate_id"] for i in chosen]
        keep, reasons = prune(
            ids,
            np.asarray([by_id[c]["s_correct"] for c in ids], dtype=np.float64),
            np.asarray([by_id[c]["s_incorrect"] for c in ids], dtype=np.float64),
            fraction,
            rule=rule,
        )
        for i, kept, reason in zip(chosen, keep, reasons):
            if not kept:
                rows[i]["selected"], rows[i]["decision"] = False, f"pruned by influence ({rule}): {reason}"
                counts["influence_pruned"] += 1
    return pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), counts


def kind_candidates(
    embeddings: pa.Table, matrix: np.ndarray, quality: dict[str, float], spec: KindSpec, kind: str
) -> Candidates:
    """The candidates of one kind that a spec allows (its sources and origins), with quality and
    embedding rows."""
    mask = np.asarray(embeddings.column("kind").to_pylist()) == kind
    if spec.sources:
        mask &= np.isin(np.asarray(embeddings.column("source").to_pylist(), dtype=object), spec.sources)
    if spec.origins:
        mask &= np.isin(np.asarray(embeddings.column("origin").to_pylist(), dtype=object), spec.origins)
    rows = np.flatnonzero(mask)
    sub = embeddings.take(pa.array(rows, pa.int64()))
    ids = sub.column("candidate_id").to_pylist()
    return Candidates(
        ids,
        sub.column("source").to_pylist(),
        sub.column("origin").to_pylist(),
        np.asarray([quality[i] for i in ids], dtype=np.float32),
        matrix[rows] if len(rows) else matrix[:0],
    )


def decide_spec(
    embeddings: pa.Table,
    matrix: np.ndarray,
    quality: dict[str, float],
    spec: MixtureSpec,
    influence: pa.Table | None,
    *,
    kcenter: Callable[..., KCenterResult] = kcenter_greedy,
) -> tuple[pa.Table, dict[str, int], dict[str, Candidates]]:
    """Every decision of one mixture spec: reasoning rows by QaDS to the spec's ratio (then pruned
    by influence when the spec says so), general rows to the budget that makes `general_share`.

    Inputs: the `embeddings` rows and matrix; {candidate_id: quality}; the spec; the
    `influence_scores` table (needed only when the spec prunes); the k-center function.
    Output: (DECISION_SCHEMA table, counts, {kind: its candidates} for plots).
    """
    from mathdata_pipeline.mixtures.compose import general_budget

    reasoning = kind_candidates(embeddings, matrix, quality, spec.reasoning, "reasoning")
    decided = select(
        reasoning,
        spec.reasoning,
        int(round(spec.reasoning.selection_ratio * len(reasoning.ids))),
        kind="reasoning",
        seed=spec.seed,
        kcenter=kcenter,
    )
    counts: dict[str, int] = {}
    prune = spec.reasoning.influence_prune
    if prune.fraction > 0:
        if influence is None:
            raise ValueError("the spec prunes by influence but influence_scores was never materialized")
        decided, counts = apply_influence_prune(decided, influence, prune.fraction, prune.rule)
    general = kind_candidates(embeddings, matrix, quality, spec.general, "general")
    budget = general_budget(
        int(np.sum(decided.column("selected").to_numpy(zero_copy_only=False))), spec, len(general.ids)
    )
    decisions = pa.concat_tables(
        [decided, select(general, spec.general, budget, kind="general", seed=spec.seed, kcenter=kcenter)]
    )
    for kind in ("reasoning", "general"):
        mine = decisions.filter(pc.equal(decisions.column("kind"), kind))
        counts[f"{kind}/candidates"] = mine.num_rows
        counts[f"{kind}/selected"] = int(np.sum(mine.column("selected").to_numpy(zero_copy_only=False)))
    return decisions, counts, {"reasoning": reasoning, "general": general}
