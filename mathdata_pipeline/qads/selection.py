"""QaDS decisions for one kind of rows: eligibility, quality, then k-center greedy (or the weighted
rule) to a budget under per-source quotas.

Scores (embeddings, measured and predicted quality, influence) are inputs computed elsewhere; this
module only decides, and records for every candidate whether it was selected and why (DESIGN.md:
scores separate from decisions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.mixtures.spec import InfluencePrune, KindSpec, MixtureSpec
from mathdata_pipeline.qads.kcenter import KCenterResult, kcenter_greedy

DECISION_SCHEMA = pa.schema(
    [
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("evaluation_split", pa.bool_()),
        pa.field("quality", pa.float32()),
        pa.field("q_measured", pa.float32()),
        pa.field("q_predicted", pa.float32()),
        pa.field("selected", pa.bool_(), nullable=False),
        pa.field("selection_rank", pa.int32()),
        pa.field("min_distance", pa.float32()),
        pa.field("influence_score", pa.float32()),
        pa.field("decision", pa.string(), nullable=False),
    ]
)


@dataclass
class Candidates:
    """The rows of one kind to select from: ids, sources, origins (n,), the measured win rate
    `q_measured` (NaN where not labelled), the scorer's `q_predicted` (NaN when there is no
    scorer), `evaluation` (True for rows of a source marked as an evaluation split) and the
    embeddings (n, d)."""

    ids: list[str]
    sources: list[str]
    origins: list[str]
    q_measured: np.ndarray
    q_predicted: np.ndarray
    evaluation: np.ndarray
    embeddings: np.ndarray

    def eligible(self, spec: KindSpec) -> np.ndarray:
        """Boolean mask of the rows the spec may train on: every row not from an evaluation split,
        plus those of the evaluation splits it names in `evaluation_sources`."""
        allowed = np.isin(np.asarray(self.sources, dtype=object), spec.evaluation_sources)
        return ~self.evaluation | allowed


def _percentiles(values: np.ndarray) -> np.ndarray:
    """Average-rank percentiles in (0, 1] of `values` (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(values, method="average") / len(values) if len(values) else values


def combine_quality(measured: np.ndarray, predicted: np.ndarray, rule: str) -> np.ndarray:
    """The quality a selection rule uses, from the measured win rates (NaN = not labelled) and
    the predictions (NaN = no scorer).

    `percentile`: measured rows get their percentile among the measured rows, the others their
    percentile among the predictions of unmeasured rows, so both sit on one (0, 1] scale;
    `predicted`: the prediction for every row; `measured_else_predicted`: the measured value where
    there is one. A row with no usable value gets 0 (the lowest quality). Output: float64 (n,).
    """
    measured, predicted = np.asarray(measured, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    has_measure = np.isfinite(measured)
    if rule == "percentile":
        out = np.zeros(len(measured))
        out[has_measure] = _percentiles(measured[has_measure])
        rest = ~has_measure & np.isfinite(predicted)
        out[rest] = _percentiles(predicted[rest])
        return out
    if rule == "predicted":
        return np.nan_to_num(predicted, nan=0.0)
    if rule == "measured_else_predicted":
        return np.nan_to_num(np.where(has_measure, measured, predicted), nan=0.0)
    raise ValueError(f"unknown quality rule {rule!r}: percentile, predicted or measured_else_predicted")


def _quality_survivors(quality: np.ndarray, ids: list[str], keep_ratio: float) -> np.ndarray:
    """Positions of the top `keep_ratio` share by quality (at least one), ties broken by id."""
    keep = max(1, int(round(keep_ratio * len(ids)))) if ids else 0
    order = sorted(range(len(ids)), key=lambda i: (-float(quality[i]), ids[i]))
    return np.sort(np.asarray(order[:keep], dtype=np.int64))


def _nullable_float(values: np.ndarray) -> pa.Array:
    """float32 array with NaN as null."""
    return pa.array(values.astype(np.float32), pa.float32(), mask=np.isnan(values))


def quota_allowance(sources: list[str], quotas: dict[str, int]) -> int:
    """How many rows of `sources` (one entry per row) the per-source `quotas` let through."""
    counts = Counter(sources)
    return sum(min(quotas.get(source, count), count) for source, count in counts.items())


def _random_picks(ids: list[str], sources: list[str], quotas: dict[str, int], budget: int, seed: int) -> np.ndarray:
    """Up to `budget` positions into `ids` in a seeded random order (a hash of seed and id, so adding
    or reordering candidates does not reshuffle the others), at most `quotas[source]` per source."""
    order = sorted(range(len(ids)), key=lambda i: stable_hash("random", str(seed), ids[i]))
    taken: Counter[str] = Counter()
    picks: list[int] = []
    for i in order:
        if len(picks) == budget:
            break
        if taken[sources[i]] < quotas.get(sources[i], budget):
            taken[sources[i]] += 1
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

    Inputs: the candidates; the kind's spec (eligibility, quality rule, combine rule, keep ratio,
    weight, quotas); `budget`, the number of rows to select (capped by what the eligible rows and
    the quotas allow); `kind` (reasoning | general); `seed` for the first pick; `kcenter`, the
    selector (default `kcenter_greedy`; assets pass the selector resource's `select`). Both QaDS
    rules run on the selector, so per-source quotas hold under each; `random` draws the budget
    uniformly (seeded by `seed`; quality and embeddings unused), the baseline a QaDS selection of
    the same size is compared with. Output: one DECISION_SCHEMA row per candidate, in input order;
    `selection_rank` is the pick order (0-based), `min_distance` the distance to the nearest
    earlier pick when it was chosen (inf for the first; null under `random`), `quality` the
    combined quality the rule used, and `decision` says why.
    """
    n = len(candidates.ids)
    quality = combine_quality(candidates.q_measured, candidates.q_predicted, spec.quality)
    rank = np.full(n, -1, dtype=np.int64)
    min_distance = np.full(n, np.nan, dtype=np.float32)
    decision = ["not selected: budget reached"] * n
    eligible = candidates.eligible(spec)
    for i in np.flatnonzero(~eligible):
        decision[i] = f"not selected: {candidates.sources[i]} is an evaluation split (not listed in evaluation_sources)"
    pool = np.flatnonzero(eligible)
    if spec.combine_rule == "filter_then_kcenter" and len(pool):
        kept = pool[_quality_survivors(quality[pool], [candidates.ids[i] for i in pool], spec.quality_keep_ratio)]
        threshold = float(quality[kept].min())
        for i in np.setdiff1d(pool, kept):
            decision[i] = (
                f"not selected: quality {quality[i]:.3f} below the kept "
                f"{spec.quality_keep_ratio:.0%} (>= {threshold:.3f})"
            )
        pool = kept
    quotas = spec.per_source_quota or None
    pool_sources = [candidates.sources[i] for i in pool]
    k = min(budget, quota_allowance(pool_sources, quotas) if quotas else len(pool))
    if k > 0:
        if spec.combine_rule == "random":
            picks = pool[_random_picks([candidates.ids[i] for i in pool], pool_sources, quotas or {}, k, seed)]
            distances = np.full(len(picks), np.nan, dtype=np.float32)
        else:
            result = kcenter(
                candidates.embeddings[pool],
                k,
                seed=seed,
                groups=np.asarray(pool_sources, dtype=object) if quotas else None,
                quotas=quotas,
                bonus=spec.weight * quality[pool] if spec.combine_rule == "weighted" else None,
            )
            picks, distances = pool[result.indices], result.min_distance
        rank[picks] = np.arange(len(picks))
        min_distance[picks] = distances
        how = "random pick" if spec.combine_rule == "random" else "pick"
        for order, i in enumerate(picks):
            decision[i] = f"selected: {how} {order + 1} of {len(picks)}"
        used = Counter(candidates.sources[i] for i in picks)
        for i in pool[rank[pool] < 0]:
            source = candidates.sources[i]
            if quotas and source in quotas and used[source] >= quotas[source]:
                decision[i] = f"not selected: quota of {quotas[source]} rows for {source} reached"
    return pa.table(
        {
            "candidate_id": candidates.ids,
            "kind": [kind] * n,
            "source": candidates.sources,
            "origin": candidates.origins,
            "evaluation_split": pa.array(candidates.evaluation, pa.bool_()),
            "quality": pa.array(quality.astype(np.float32), pa.float32()),
            "q_measured": pa.array(
                candidates.q_measured.astype(np.float32), pa.float32(), mask=np.isnan(candidates.q_measured)
            ),
            "q_predicted": pa.array(
                candidates.q_predicted.astype(np.float32), pa.float32(), mask=np.isnan(candidates.q_predicted)
            ),
            "selected": pa.array(rank >= 0, pa.bool_()),
            "selection_rank": pa.array(np.where(rank >= 0, rank, 0).astype(np.int32), pa.int32(), mask=rank < 0),
            "min_distance": pa.array(min_distance, pa.float32(), mask=np.isnan(min_distance)),
            "influence_score": pa.nulls(n, pa.float32()),
            "decision": decision,
        },
        schema=DECISION_SCHEMA,
    )


def apply_influence_prune(
    decisions: pa.Table, scores: pa.Table, prune: InfluencePrune
) -> tuple[pa.Table, dict[str, int]]:
    """Prune the selected rows of `decisions` by influence or a baseline (after QaDS, METHODS.md §5.4).

    Inputs: reasoning decisions; the `influence_scores` table; the spec's `InfluencePrune`
    (see `influence.pruning.decide_pruning`: held-out rows dropped, then `fraction` of the scored
    selected rows by `by`). Output: (decisions with `selected`, `decision` and `influence_score`
    (the score that decided) updated, counts).
    """
    from mathdata_pipeline.influence.pruning import decide_pruning

    rows = decisions.to_pylist()
    result = decide_pruning([r["candidate_id"] for r in rows if r["selected"]], scores, prune)
    for r in rows:
        if r["candidate_id"] in result.dropped:
            r["influence_score"] = result.scores[r["candidate_id"]]
            if result.dropped[r["candidate_id"]]:
                r["selected"], r["decision"] = False, result.reasons[r["candidate_id"]]
    return pa.Table.from_pylist(rows, schema=DECISION_SCHEMA), result.counts


# The solutions columns that say which DART strategy keeps a row (read by `selections`).
DART_SOLUTION_COLUMNS = ["sample_id", "method", "dart_strategies", "dart_primary"]


def dart_rows_outside(solutions: pa.Table | None, dart_strategy: str) -> set[str]:
    """The sample_ids of the DART solutions (method "dart") a spec with this `dart_strategy` may not
    draw: for "primary", those the run's primary strategy does not keep (`dart_primary` false);
    for a named strategy, those whose `dart_strategies` does not list it (null: a run that did not
    record its strategies, so none). Inputs: solutions rows with sample_id, method and, when
    present, dart_strategies and dart_primary (None: no solutions, nothing excluded)."""
    if solutions is None:
        return set()
    columns = [c for c in DART_SOLUTION_COLUMNS if c in solutions.column_names]
    outside = set()
    for row in solutions.select(columns).to_pylist():
        if row["method"] != "dart":
            continue
        if dart_strategy == "primary":
            if row.get("dart_primary") is False:
                outside.add(row["sample_id"])
        elif dart_strategy not in (row.get("dart_strategies") or []):
            outside.add(row["sample_id"])
    return outside


def kind_candidates(
    embeddings: pa.Table,
    matrix: np.ndarray,
    quality: pa.Table,
    spec: KindSpec,
    kind: str,
    excluded: Collection[str] = frozenset(),
) -> Candidates:
    """The candidates of one kind that a spec draws from (its sources and origins, none of `excluded`).

    Inputs: the `embeddings` rows (candidate_id, kind, source, origin, evaluation_split) and
    matrix; the `quality_scores` rows (candidate_id, q_label, q_pred); the kind's spec; the kind;
    `excluded`, candidate ids left out (DART rows of another strategy, `dart_rows_outside`).
    Output: Candidates in `embeddings` order. Raises ValueError naming a candidate without a
    quality row (quality_scores is older than embeddings).
    """
    mask = np.asarray(embeddings.column("kind").to_pylist()) == kind
    if spec.sources:
        mask &= np.isin(np.asarray(embeddings.column("source").to_pylist(), dtype=object), spec.sources)
    if spec.origins:
        mask &= np.isin(np.asarray(embeddings.column("origin").to_pylist(), dtype=object), spec.origins)
    if excluded:
        mask &= ~np.isin(np.asarray(embeddings.column("candidate_id").to_pylist(), dtype=object), list(excluded))
    rows = np.flatnonzero(mask)
    sub = embeddings.take(pa.array(rows, pa.int64()))
    ids = sub.column("candidate_id").to_pylist()
    scores = {
        cid: (measured, predicted)
        for cid, measured, predicted in zip(
            *(quality.column(c).to_pylist() for c in ("candidate_id", "q_label", "q_pred"))
        )
    }
    missing = next((cid for cid in ids if cid not in scores), None)
    if missing is not None:
        raise ValueError(f"candidate {missing} has no quality_scores row: materialize quality_scores again")
    pairs = np.asarray([[np.nan if v is None else v for v in scores[cid]] for cid in ids], dtype=np.float64)
    pairs = pairs.reshape(len(ids), 2)
    return Candidates(
        ids,
        sub.column("source").to_pylist(),
        sub.column("origin").to_pylist(),
        pairs[:, 0],
        pairs[:, 1],
        np.asarray(sub.column("evaluation_split").to_pylist(), dtype=bool),
        matrix[rows] if len(rows) else matrix[:0],
    )


def decide_spec(
    embeddings: pa.Table,
    matrix: np.ndarray,
    quality: pa.Table,
    spec: MixtureSpec,
    influence: pa.Table | None,
    *,
    kcenter: Callable[..., KCenterResult] = kcenter_greedy,
    solutions: pa.Table | None = None,
) -> tuple[pa.Table, dict[str, int], dict[str, Candidates]]:
    """Every decision of one mixture spec: reasoning rows by QaDS to the spec's ratio of the
    eligible candidates (then pruned by influence when the spec says so), general rows to the
    budget that makes `general_share`.

    Inputs: the `embeddings` rows and matrix; the `quality_scores` table; the spec; the
    `influence_scores` table (needed only when the spec prunes); the k-center function;
    `solutions` (sample_id, method, dart_strategies, dart_primary), whose DART rows outside the
    spec's `dart_strategy` are no candidates (counted as `reasoning/dart_other_strategy`; None:
    every DART row is one).
    Output: (DECISION_SCHEMA table, counts, {kind: its candidates} for plots).
    """
    from mathdata_pipeline.mixtures.compose import general_budget

    outside = dart_rows_outside(solutions, spec.dart_strategy)
    reasoning = kind_candidates(embeddings, matrix, quality, spec.reasoning, "reasoning", outside)
    decided = select(
        reasoning,
        spec.reasoning,
        int(round(spec.reasoning.selection_ratio * int(reasoning.eligible(spec.reasoning).sum()))),
        kind="reasoning",
        seed=spec.seed,
        kcenter=kcenter,
    )
    ids = embeddings.column("candidate_id").to_pylist()
    counts: dict[str, int] = {"reasoning/dart_other_strategy": sum(cid in outside for cid in ids)}
    prune = spec.reasoning.influence_prune
    if prune.fraction > 0:
        if influence is None:
            raise ValueError("the spec prunes by influence but influence_scores was never materialized")
        decided, pruned = apply_influence_prune(decided, influence, prune)
        counts.update(pruned)
    general = kind_candidates(embeddings, matrix, quality, spec.general, "general")
    budget = general_budget(
        int(np.sum(decided.column("selected").to_numpy(zero_copy_only=False))),
        spec,
        int(general.eligible(spec.general).sum()),
    )
    decisions = pa.concat_tables(
        [decided, select(general, spec.general, budget, kind="general", seed=spec.seed, kcenter=kcenter)]
    )
    for kind in ("reasoning", "general"):
        mine = decisions.filter(pc.equal(decisions.column("kind"), kind))
        selected = mine.column("selected").to_numpy(zero_copy_only=False)
        evaluation = mine.column("evaluation_split").to_numpy(zero_copy_only=False)
        counts[f"{kind}/candidates"] = mine.num_rows
        counts[f"{kind}/selected"] = int(selected.sum())
        counts[f"{kind}/evaluation_split_excluded"] = int((evaluation & ~selected).sum())
        counts[f"{kind}/evaluation_split_selected"] = int((evaluation & selected).sum())
    return decisions, counts, {"reasoning": reasoning, "general": general}


def evaluation_split_warnings(decisions: pa.Table) -> list[str]:
    """One line per (kind, source) of selected rows that come from an evaluation split (a spec
    allowed them in `evaluation_sources`): what the selections metadata warns about."""
    chosen = decisions.filter(pc.field("selected") & pc.field("evaluation_split"))
    counts = Counter(zip(chosen.column("kind").to_pylist(), chosen.column("source").to_pylist()))
    return [
        f"{count} selected {kind} rows come from {source}, an evaluation split the spec allows in evaluation_sources"
        for (kind, source), count in sorted(counts.items())
    ]
