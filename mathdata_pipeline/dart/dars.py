"""Difficulty-aware rejection sampling (DARS, DART-Math, METHODS.md §2.3 and §6.2) as a controller.

The LLM calls and the grading happen elsewhere. This module decides which queries are sampled
in each round and keeps the per-query counters:

    fail = difficulty_from_samples(d_trials, d_correct)         # difficulty round, n_d per query
    state = start(query_ids, config, n_trials=d_trials, n_correct=d_correct)
    while plan := plan_round(state):                             # [(query_id, n_samples), ...]
        state = update(state, graded)                            # [(query_id, correct), ...]
    report = summary(state, levels)

The difficulty round's samples are training samples too (paper, [DOC]): `start` takes their
counts as the initial counters, so they count toward targets and toward the `n_max` cap.

Strategies:
- "uniform" [DOC]: every query wants `k_u` correct responses.
- "prop2diff" [DOC]: the target is proportional to the fail rate, rounded up, at least 1; the
  hardest query gets `k_p`. The exact formula is UNVERIFIED (two variants, `prop2diff_formula`).
- "vrt" [CODE]: vanilla rejection tuning, a fixed `vrt_trials` per query and no target.
- "band" (not in the paper): queries whose estimated pass rate lies in `band` are sampled like
  "uniform"; the others are dropped at the start with stop reason "out_of_band".

Several strategies from one run: `serve` names further strategies (uniform, prop2diff) sampled by
the same run. Each query is sampled until the most demanding served target is met (or n_max), and
`strategy_targets` gives every served strategy's own targets, so curation can keep the first
target_<strategy> correct samples per query for each: the selection a run of that strategy alone
would have kept with the same seeds, since a query's samples are decided in sample-index order.

Stop reasons: "target_reached", "n_max" (cap hit before the target), "vrt_done" (VRT's fixed
trials done), "out_of_band". When a round completes both the target and the cap, the reason is
"target_reached" (the reference code would say "max_n_trials").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

STRATEGIES = ("uniform", "prop2diff", "vrt", "band")
# Strategies one run can serve together: every query has a target of at least 1 under them. VRT (no
# target) and band (no target outside the band) keep every correct sample where the target is 0, which
# a longer shared run would change, so they run alone.
SERVABLE = ("uniform", "prop2diff")
PROP2DIFF_FORMULAS = ("max_normalized", "linear")
DIFFICULTY_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_EPS = 1e-9  # float tolerance for rounding up targets and for the band's inclusive bounds


@dataclass(frozen=True)
class DarsConfig:
    """Knobs of one DARS run. Provenance: [DOC] paper/blog, [CODE] hkust-nlp/dart-math, UNVERIFIED.

    - strategy: "uniform" | "prop2diff" | "vrt" | "band" (see the module docstring).
    - k_u: correct responses wanted per query for "uniform" and "band". 40 matches the released
      set size and the README command (UNVERIFIED in the paper; the curation notebook uses 50).
    - k_p: correct responses wanted for the hardest query under "prop2diff". The paper's value is
      UNVERIFIED (192 is a guess); choose it for a dataset size with `k_for_size`.
    - n_max: cap on trials per query, difficulty round included. [DOC] 2048 for Uniform, more
      than 8192 for Prop2Diff; use small values in demos. Not used by "vrt".
    - vrt_trials: fixed trials per query for "vrt", difficulty round included. [CODE] 52.
    - band: (low, high), inclusive pass-rate range kept by "band"; required for it, else unused.
      Not from the paper.
    - samples_per_round: samples each active query gets per round, [CODE] 1. With more than 1 a
      query can overshoot its target within its last round (curation then keeps `target`).
    - strict_stop: False stops at n_correct >= target (the paper's text); True stops at
      n_correct > target, collecting target + 1 like the reference code [CODE].
    - prop2diff_formula: "max_normalized", target = max(1, ceil(k_p * f / max_j f_j)), or
      "linear", target = max(1, ceil(k_p * f)); f = fail rate. Both UNVERIFIED.
    - serve: further strategies (from SERVABLE) served by the same run; `strategy` is the primary
      one and must be servable too. Empty: `strategy` alone.
    - fail_scale: max_normalized's max_j f_j taken over a larger query set than the one sampled
      (the paper's: MATH train + GSM8K train together); None: the max of the sampled queries.
      Must be at least their max fail rate.
    """

    strategy: str = "uniform"
    k_u: int = 40
    k_p: int = 192
    n_max: int = 2048
    vrt_trials: int = 52
    band: tuple[float, float] | None = None
    samples_per_round: int = 1
    strict_stop: bool = False
    prop2diff_formula: str = "max_normalized"
    serve: tuple[str, ...] = ()
    fail_scale: float | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.prop2diff_formula not in PROP2DIFF_FORMULAS:
            raise ValueError(f"prop2diff_formula must be one of {PROP2DIFF_FORMULAS}, got {self.prop2diff_formula!r}")
        for name in ("k_u", "k_p", "n_max", "vrt_trials", "samples_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.strategy == "band" and self.band is None:
            raise ValueError("strategy 'band' needs band=(low, high)")
        if self.band is not None and not 0.0 <= self.band[0] <= self.band[1] <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {self.band}")
        if self.serve and any(name not in SERVABLE for name in (self.strategy, *self.serve)):
            raise ValueError(
                f"serving several strategies needs strategies among {SERVABLE}, got {(self.strategy, *self.serve)}"
            )
        if self.fail_scale is not None and not 0.0 < self.fail_scale <= 1.0:
            raise ValueError(f"fail_scale must lie in (0, 1], got {self.fail_scale}")

    @property
    def served(self) -> tuple[str, ...]:
        """Every strategy this run serves: the primary `strategy` first, then `serve` (duplicates dropped)."""
        return tuple(dict.fromkeys((self.strategy, *self.serve)))


@dataclass(frozen=True)
class DarsState:
    """Per-query counters of a DARS run, one array element per query (same order as query_ids).

    - config: the run's DarsConfig.
    - query_ids: the queries; index maps each id to its position.
    - fail_rate: float64, the difficulty estimate from the difficulty round (NaN without one).
    - target: int64, correct responses wanted; 0 means none (VRT, out of band).
    - max_trials: int64, the trial cap (n_max, or vrt_trials for VRT).
    - n_trials, n_correct: int64, samples drawn and graded correct so far (difficulty round included).
    - stop_reason: str array, "" while the query is active.
    Build it with `start`; `update` returns a new state and leaves this one unchanged.
    """

    config: DarsConfig
    query_ids: tuple[str, ...]
    index: dict[str, int]
    fail_rate: np.ndarray
    target: np.ndarray
    max_trials: np.ndarray
    n_trials: np.ndarray
    n_correct: np.ndarray
    stop_reason: np.ndarray

    @property
    def done(self) -> np.ndarray:
        """Boolean array: True where the query has stopped."""
        return self.stop_reason != ""

    def to_table(self) -> pa.Table:
        """The per-query stats table: query_id, fail_rate, target, max_trials, n_trials, n_correct,
        done, stop_reason (null while active)."""
        return pa.table(
            {
                "query_id": pa.array(self.query_ids, pa.string()),
                "fail_rate": pa.array(self.fail_rate, pa.float64(), from_pandas=True),
                "target": self.target,
                "max_trials": self.max_trials,
                "n_trials": self.n_trials,
                "n_correct": self.n_correct,
                "done": self.done,
                "stop_reason": pa.array([r or None for r in self.stop_reason.tolist()], pa.string()),
            }
        )


def difficulty_from_samples(n_trials: Sequence[int] | np.ndarray, n_correct: Sequence[int] | np.ndarray) -> np.ndarray:
    """Fail rate per query, (n_trials - n_correct) / n_trials, as float64; NaN where n_trials is 0.

    Inputs: per-query counts of the difficulty round (equal lengths, 0 <= n_correct <= n_trials).
    """
    trials, correct = _counts(n_trials, n_correct)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(trials > 0, (trials - correct) / trials, np.nan)


def targets(fail_rates: Sequence[float] | np.ndarray, config: DarsConfig) -> np.ndarray:
    """Per-query number of correct responses wanted (int64), from fail rates in [0, 1].

    - uniform: k_u for every query (fail rates unused, may be NaN);
    - prop2diff: max(1, ceil(k_p * f / max f)) or max(1, ceil(k_p * f)) per `prop2diff_formula`;
      all-zero fail rates give 1 each. Products within 1e-9 of an integer count as that integer,
      so float noise (100 * 0.07 = 7.000000000000001) does not add one;
    - vrt: 0 for every query (VRT stops on trials only);
    - band: k_u where the pass rate 1 - f lies in [low, high] (inclusive), else 0;
    - several served strategies (`config.serve`): the largest of their targets, what sampling needs.
    Raises ValueError when prop2diff or band gets a NaN or out-of-range fail rate, or when a fail
    rate exceeds `fail_scale`.
    """
    f = np.asarray(fail_rates, dtype=np.float64)
    if len(config.served) > 1:
        return np.max(np.stack(list(strategy_targets(f, config).values())), axis=0)
    if config.strategy == "uniform":
        return np.full(f.shape, config.k_u, dtype=np.int64)
    if config.strategy == "vrt":
        return np.zeros(f.shape, dtype=np.int64)
    if np.isnan(f).any() or (f < 0).any() or (f > 1).any():
        raise ValueError(
            f"strategy {config.strategy!r} needs fail rates in [0, 1] for every query (run a difficulty round)"
        )
    if config.strategy == "band":
        low, high = config.band
        pass_rate = 1.0 - f
        return np.where((pass_rate >= low - _EPS) & (pass_rate <= high + _EPS), config.k_u, 0).astype(np.int64)
    scale = _scale(f, config) if config.prop2diff_formula == "max_normalized" else 1.0
    share = f / scale if scale > 0 else np.zeros_like(f)
    return np.maximum(1, np.ceil(config.k_p * share - _EPS)).astype(np.int64)


def _scale(f: np.ndarray, config: DarsConfig) -> float:
    """max_normalized's divisor: `fail_scale`, else the largest fail rate (1.0 without queries)."""
    if config.fail_scale is None:
        return float(f.max()) if f.size else 1.0
    if f.size and f.max() > config.fail_scale + _EPS:
        raise ValueError(f"fail rate {f.max()} exceeds fail_scale {config.fail_scale}: it must cover all queries")
    return config.fail_scale


def whole_set_scale(fail_rates: Sequence[float] | np.ndarray) -> float | None:
    """The `fail_scale` of a query set larger than one partition (e.g. every partition's difficulty
    ledger together): the largest known fail rate (NaN skipped), or None when none is known or all
    are 0 (then no query is harder than another and the scale does not matter)."""
    f = np.asarray(fail_rates, dtype=np.float64)
    known = f[~np.isnan(f)]
    return float(known.max()) if known.size and known.max() > 0 else None


def strategy_targets(fail_rates: Sequence[float] | np.ndarray, config: DarsConfig) -> dict[str, np.ndarray]:
    """{strategy: its per-query targets (int64)} for every strategy the run serves (`config.served`),
    each computed as if it ran alone with this config's k_u, k_p, formula and scale."""
    return {name: targets(fail_rates, replace(config, strategy=name, serve=())) for name in config.served}


def k_for_size(fail_rates: Sequence[float] | np.ndarray, size: int, config: DarsConfig) -> int:
    """Smallest k (k_u for uniform/band, k_p for prop2diff) whose targets sum to at least `size`.

    This is how the paper sizes a dataset ("choose k_p so that the sum of targets is the wanted
    size"). Raises ValueError for vrt, or when no k reaches `size` (e.g. an empty band).
    """
    field = {"uniform": "k_u", "band": "k_u", "prop2diff": "k_p"}.get(config.strategy)
    if field is None:
        raise ValueError("k_for_size needs strategy uniform, band or prop2diff")
    config = replace(config, serve=())

    def total(k: int) -> int:
        return int(targets(fail_rates, replace(config, **{field: k})).sum())

    low, high = 1, max(1, size)
    if total(high) < size:
        raise ValueError(f"no {field} gives {size} target responses")
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if total(middle) >= size else (middle + 1, high)
    return low


def sized(config: DarsConfig, fail_rates: Sequence[float] | np.ndarray, size: int) -> DarsConfig:
    """`config` with k (k_u for uniform/band, k_p for prop2diff) set by `k_for_size` so that the
    targets of these fail rates sum to at least `size` rows: the paper's way of aiming at a dataset
    size. With several served strategies each gets its own k for the same `size` (uniform's k_u,
    prop2diff's k_p), so their selections are of (nearly) equal size. Queries that hit `n_max`
    first give fewer rows. Raises ValueError as `k_for_size` does."""
    for name in config.served:
        field = "k_p" if name == "prop2diff" else "k_u"
        config = replace(config, **{field: k_for_size(fail_rates, size, replace(config, strategy=name))})
    return config


def start(
    query_ids: Iterable[str],
    config: DarsConfig,
    n_trials: Sequence[int] | np.ndarray | None = None,
    n_correct: Sequence[int] | np.ndarray | None = None,
) -> DarsState:
    """A new DarsState for distinct `query_ids`, seeded with the difficulty round's counts.

    n_trials / n_correct: per-query counts of the difficulty round (both or neither; default 0).
    They become the initial counters (the samples are reused as training data) and give the fail
    rates that prop2diff and band need. Queries that already meet their target or cap are stopped
    at once; band drops the queries outside the band with reason "out_of_band".
    """
    ids = tuple(query_ids)
    index = {query_id: i for i, query_id in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError("query_ids must be distinct")
    if (n_trials is None) != (n_correct is None):
        raise ValueError("give both n_trials and n_correct, or neither")
    if n_trials is None:
        n_trials = n_correct = np.zeros(len(ids), dtype=np.int64)
    trials, correct = _counts(n_trials, n_correct)
    if trials.shape != (len(ids),):
        raise ValueError(f"expected {len(ids)} counts, got {trials.shape[0]}")
    fail_rate = difficulty_from_samples(trials, correct)
    target = targets(fail_rate, config)
    cap = config.vrt_trials if config.strategy == "vrt" else config.n_max
    reason = np.full(len(ids), "", dtype="<U14")
    if config.strategy == "band":
        reason[target == 0] = "out_of_band"
    state = DarsState(
        config, ids, index, fail_rate, target, np.full(len(ids), cap, dtype=np.int64), trials, correct, reason
    )
    return replace(state, stop_reason=_settle(state))


def plan_round(state: DarsState, max_samples: int | None = None) -> list[tuple[str, int]]:
    """The next round: (query_id, n_samples) for every active query, in query order.

    Each active query gets min(samples_per_round, trials left under its cap), so no query ever
    passes n_max (or vrt_trials). `max_samples`, when given, caps the round's total: queries are
    filled in order and the rest wait (use it to stop at a raw-sample budget). An empty list
    means nothing is left to sample.
    """
    active = np.flatnonzero(~state.done)
    counts = np.minimum(state.config.samples_per_round, state.max_trials[active] - state.n_trials[active])
    if max_samples is not None:
        before = np.cumsum(counts) - counts
        counts = np.clip(max_samples - before, 0, counts)
    return [(state.query_ids[i], int(n)) for i, n in zip(active.tolist(), counts.tolist()) if n > 0]


def update(state: DarsState, graded: Iterable[tuple[str, bool]]) -> DarsState:
    """A new state with graded samples added: one (query_id, correct) per sample.

    Every sample counts toward n_trials (and n_correct when correct), then each active query is
    stopped if it reached its target (>= target, or > target with strict_stop) or its trial cap.
    Samples for already stopped queries are counted but do not change their stop reason.
    Raises ValueError for an unknown query_id.
    """
    pairs = list(graded)
    try:
        rows = np.fromiter((state.index[query_id] for query_id, _ in pairs), dtype=np.int64, count=len(pairs))
    except KeyError as error:
        raise ValueError(f"graded sample for unknown query_id {error.args[0]!r}") from None
    correct = np.fromiter((bool(ok) for _, ok in pairs), dtype=bool, count=len(pairs))
    size = len(state.query_ids)
    new = replace(
        state,
        n_trials=state.n_trials + np.bincount(rows, minlength=size),
        n_correct=state.n_correct + np.bincount(rows[correct], minlength=size),
    )
    return replace(new, stop_reason=_settle(new))


def summary(state: DarsState, levels: Sequence[str] | None = None, bins: Sequence[float] = DIFFICULTY_BINS) -> dict:
    """Run report as a JSON-ready dict.

    Top level: strategy, queries, active, targets_total (correct samples wanted, summed),
    with_target, reached (n_correct >= target, whatever strict_stop says; for VRT, which has no
    target, at least one correct: `reach_goal`), reach_ratio (reached / with_target, None without
    targets, e.g. an empty band), raw_samples, correct_samples, samples_per_correct (None without a
    correct sample), with_correct (queries with at least one correct response) and stop_reasons
    (count per reason, "active" included).
    by_strategy: per served strategy (`strategy_report`).
    by_difficulty: the same counts per fail-rate bin ("[0.0,0.2)" ... "[0.8,1.0]", last bin
    closed; "unknown" for queries without a difficulty estimate). by_level: per level label when
    `levels` (one label per query, in query order) is given.
    """
    everything = np.ones(len(state.query_ids), dtype=bool)
    reasons = np.where(state.done, state.stop_reason, "active")
    names, counts = np.unique(reasons, return_counts=True)
    report = {
        "strategy": state.config.strategy,
        **_group(state, everything),
        "active": int((~state.done).sum()),
        "targets_total": int(state.target.sum()),
        "stop_reasons": dict(zip(names.tolist(), counts.tolist())),
        "by_strategy": strategy_report(state),
    }
    edges = np.asarray(bins, dtype=np.float64)
    known = ~np.isnan(state.fail_rate)
    bin_of = np.clip(np.digitize(np.where(known, state.fail_rate, 0.0), edges[1:-1]), 0, len(edges) - 2)
    report["by_difficulty"] = {}
    for b in range(len(edges) - 1):
        label = f"[{edges[b]:.1f},{edges[b + 1]:.1f}{']' if b == len(edges) - 2 else ')'}"
        report["by_difficulty"][label] = _group(state, known & (bin_of == b))
    if not known.all():
        report["by_difficulty"]["unknown"] = _group(state, ~known)
    if levels is not None:
        labels = np.asarray(levels, dtype=object)
        if labels.shape != everything.shape:
            raise ValueError(f"expected {everything.size} levels, got {labels.size}")
        report["by_level"] = {level: _group(state, labels == level) for level in sorted(set(labels.tolist()))}
    return report


def strategy_report(state: DarsState) -> dict[str, dict]:
    """Per served strategy (`config.served`, primary first): `k` (k_u, k_p, or vrt_trials),
    `targets_total`, `rows` (correct samples its curation keeps: the first target per query, every
    correct one where the target is 0), `reached` (queries whose target is met; VRT: at least one
    correct) and `reach_ratio` (None without targets). Needs the fail rates for prop2diff and band."""
    report = {}
    for name, wanted in strategy_targets(state.fail_rate, state.config).items():
        goal = np.ones_like(wanted) if name == "vrt" else wanted
        with_goal = goal > 0
        reached = int((with_goal & (state.n_correct >= goal)).sum())
        k = {"prop2diff": state.config.k_p, "vrt": state.config.vrt_trials}.get(name, state.config.k_u)
        report[name] = {
            "k": int(k),
            "targets_total": int(wanted.sum()),
            "rows": int(np.where(wanted > 0, np.minimum(state.n_correct, wanted), state.n_correct).sum()),
            "reached": reached,
            "reach_ratio": reached / int(with_goal.sum()) if with_goal.any() else None,
        }
    return report


def _counts(n_trials, n_correct) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 copies of per-query trial and correct counts."""
    trials = np.asarray(n_trials, dtype=np.int64)
    correct = np.asarray(n_correct, dtype=np.int64)
    if trials.shape != correct.shape or trials.ndim != 1:
        raise ValueError("n_trials and n_correct must be 1-d and of equal length")
    if (correct < 0).any() or (correct > trials).any():
        raise ValueError("counts must satisfy 0 <= n_correct <= n_trials")
    return trials, correct


def _settle(state: DarsState) -> np.ndarray:
    """Stop reasons after applying the stop rule to the active queries."""
    wanted = state.target > 0
    reached = wanted & (state.n_correct > state.target if state.config.strict_stop else state.n_correct >= state.target)
    capped = state.n_trials >= state.max_trials
    active = ~state.done
    reason = state.stop_reason.copy()
    reason[active & capped] = "vrt_done" if state.config.strategy == "vrt" else "n_max"
    reason[active & reached] = "target_reached"
    return reason


def reach_goal(state: DarsState) -> np.ndarray:
    """Correct samples a query must have to count as reached: its target, or 1 for VRT, which has
    no target (a VRT query reaches when it has at least one correct response: the coverage the
    paper holds against DARS, whose Level-5 queries VRT leaves without any)."""
    return np.ones_like(state.target) if state.config.strategy == "vrt" else state.target


def _group(state: DarsState, mask: np.ndarray) -> dict:
    """Summary counts over the queries selected by `mask`."""
    goal = reach_goal(state)
    wanted = mask & (goal > 0)
    reached = int((wanted & (state.n_correct >= goal)).sum())
    raw, correct = int(state.n_trials[mask].sum()), int(state.n_correct[mask].sum())
    return {
        "queries": int(mask.sum()),
        "with_target": int(wanted.sum()),
        "reached": reached,
        "reach_ratio": reached / int(wanted.sum()) if wanted.any() else None,
        "raw_samples": raw,
        "correct_samples": correct,
        "samples_per_correct": raw / correct if correct else None,
        "with_correct": int((mask & (state.n_correct > 0)).sum()),
    }
