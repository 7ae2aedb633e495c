"""DARS allocation at an equal raw-sample budget: Uniform and Prop2Diff against VRT.

    .venv/bin/python benchmarks/dars.py [--quick] [--n-d 8] [--vrt-trials 52] [--n-max 1024] [--jitter 1.5] [--seed 0]

Queries: the real MATH train problems (7,500; --quick: 1,000 picked by stable hash). The grader
is a SIMULATED seeded Bernoulli oracle: each query's true pass rate comes from its MATH level
(Level 1 -> 0.8 ... Level 5 -> 0.1) with a per-query jitter on the logit scale (queries within a
level differ a lot in difficulty; +-1.5 puts Level 5 between about 0.02 and 0.33). What is measured
is the allocation policy, not a model (the CPU model gets almost nothing right, so real samples
would say nothing about who gets the trials). Trial t of query i has the same outcome under every
strategy (common random numbers), so the strategies differ only in who they sample.

Procedure: a difficulty round of n_d samples per query, shared and counted in every budget;
VRT then runs to vrt_trials per query, which sets the budget B = vrt_trials * queries. k_u and k_p
are chosen so the targets sum to VRT's number of correct samples (the paper's equal dataset
size), and Uniform / Prop2Diff run rounds until B is spent or every query stopped. Reported:
(a) hard-query coverage, the share of queries with true pass rate < 0.3 that end with at least one
correct sample, and (b) raw samples per correct sample; also the share of correct samples that
fall on hard queries. The last line is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.text import problem_id, stable_hash  # noqa: E402
from mathdata_pipeline.dart.dars import (  # noqa: E402
    DarsConfig,
    DarsState,
    difficulty_from_samples,
    k_for_size,
    plan_round,
    start,
    summary,
    update,
)
from mathdata_pipeline.sources.config import data_dir  # noqa: E402

LEVEL_PASS_RATE = {"Level 1": 0.8, "Level 2": 0.6, "Level 3": 0.4, "Level 4": 0.25, "Level 5": 0.1}
UNKNOWN_LEVEL_PASS_RATE = 0.4  # MATH train has two "Level ?" problems
HARD = 0.3  # true pass rate below which a query counts as hard
QUICK_QUERIES = 1000


def load_math_train(quick: bool) -> tuple[list[str], list[str]]:
    """(query ids, levels) of MATH train; --quick keeps the 1,000 with the smallest stable hash."""
    with gzip.open(data_dir() / "math" / "math_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    queries = {problem_id("math", row["problem"]): row["level"] for row in rows}  # drops exact duplicates
    ids = sorted(queries, key=lambda qid: stable_hash("dars-bench", qid)) if quick else list(queries)
    ids = ids[:QUICK_QUERIES] if quick else ids
    return ids, [queries[qid] for qid in ids]


def true_pass_rates(ids: list[str], levels: list[str], jitter: float) -> np.ndarray:
    """Simulated pass rate per query: its level's base rate, jittered on the logit scale by
    a uniform draw in [-jitter, jitter] derived from the query id (so it is the same in --quick)."""
    base = np.array([LEVEL_PASS_RATE.get(level, UNKNOWN_LEVEL_PASS_RATE) for level in levels])
    unit = np.array([int(stable_hash("dars-jitter", qid), 16) / 16**16 for qid in ids])
    logit = np.log(base / (1 - base)) + jitter * (2 * unit - 1)
    return 1 / (1 + np.exp(-logit))


def run(config: DarsConfig, ids: list[str], outcomes: np.ndarray, n_d: int, budget: int) -> DarsState:
    """One strategy from the shared difficulty round until `budget` raw samples or all stopped."""
    d_trials = np.full(len(ids), n_d)
    state = start(ids, config, n_trials=d_trials, n_correct=outcomes[:, :n_d].sum(axis=1))
    while plan := plan_round(state, max_samples=budget - int(state.n_trials.sum())):
        graded = []
        for qid, n in plan:
            i = state.index[qid]
            graded.extend((qid, ok) for ok in outcomes[i, state.n_trials[i] : state.n_trials[i] + n].tolist())
        state = update(state, graded)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_QUERIES} queries instead of all")
    parser.add_argument("--n-d", type=int, default=8, help="difficulty-round samples per query (paper: UNVERIFIED)")
    parser.add_argument("--vrt-trials", type=int, default=52, help="VRT trials per query, sets the budget (paper: 52)")
    parser.add_argument("--n-max", type=int, default=1024, help="trial cap for Uniform/Prop2Diff (paper: 2048/8192)")
    parser.add_argument("--jitter", type=float, default=1.5, help="half-width of the logit-scale pass-rate jitter")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Bernoulli oracle")
    args = parser.parse_args()
    began = time.perf_counter()

    ids, levels = load_math_train(args.quick)
    pass_rate = true_pass_rates(ids, levels, args.jitter)
    outcomes = np.random.default_rng(args.seed).random((len(ids), args.n_max), dtype=np.float32) < pass_rate[:, None]
    hard = pass_rate < HARD
    budget = args.vrt_trials * len(ids)
    fail = difficulty_from_samples(np.full(len(ids), args.n_d), outcomes[:, : args.n_d].sum(axis=1))

    states = {"vrt": run(DarsConfig("vrt", vrt_trials=args.vrt_trials), ids, outcomes, args.n_d, budget)}
    size = int(states["vrt"].n_correct.sum())
    k_u = k_for_size(fail, size, DarsConfig("uniform"))
    k_p = k_for_size(fail, size, DarsConfig("prop2diff"))
    states["uniform"] = run(DarsConfig("uniform", k_u=k_u, n_max=args.n_max), ids, outcomes, args.n_d, budget)
    states["prop2diff"] = run(DarsConfig("prop2diff", k_p=k_p, n_max=args.n_max), ids, outcomes, args.n_d, budget)

    print(
        "ORACLE IS SIMULATED: seeded Bernoulli with per-query pass rates from the MATH level "
        f"(L1 0.8, L2 0.6, L3 0.4, L4 0.25, L5 0.1, logit jitter +-{args.jitter}, seed {args.seed})."
    )
    print("It measures the allocation policy only; the CPU model gets almost nothing right, so real samples would not.")
    print(
        f"queries {len(ids)} (hard, true pass rate < {HARD}: {int(hard.sum())}), difficulty round n_d={args.n_d}, "
        f"budget B={budget} raw samples (= VRT {args.vrt_trials}/query), n_max={args.n_max}, "
        f"k_u={k_u}, k_p={k_p} (targets sum to VRT's {size} correct)"
    )
    header = (
        f"{'strategy':<10} {'raw':>8} {'correct':>8} {'smp/corr':>8} {'hard cov':>8} {'all cov':>8} "
        f"{'reach':>6} {'hard corr %':>11} {'L5 correct':>10}"
    )
    print(header)
    coverage, per_correct, hard_share = {}, {}, {}
    for name, state in states.items():
        report = summary(state, levels)
        coverage[name] = float((state.n_correct[hard] > 0).mean())
        per_correct[name] = report["samples_per_correct"]
        reach = "-" if report["reach_ratio"] is None else f"{report['reach_ratio']:.3f}"
        hard_share[name] = int(state.n_correct[hard].sum()) / report["correct_samples"]
        print(
            f"{name:<10} {report['raw_samples']:>8} {report['correct_samples']:>8} {per_correct[name]:>8.2f} "
            f"{coverage[name]:>8.3f} {report['with_correct'] / len(ids):>8.3f} {reach:>6} "
            f"{100 * hard_share[name]:>11.1f} {report['by_level']['Level 5']['correct_samples']:>10}"
        )
    ratios = {
        f"ratio_{name}_vs_vrt_hard_coverage": coverage[name] / coverage["vrt"] for name in ("uniform", "prop2diff")
    }
    ratios |= {
        f"ratio_vrt_vs_{name}_samples_per_correct": per_correct["vrt"] / per_correct[name]
        for name in ("uniform", "prop2diff")
    }
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    elapsed = time.perf_counter() - began
    print(f"elapsed {elapsed:.1f} s")
    print(
        json.dumps(
            {
                "benchmark": "dars",
                "quick": args.quick,
                "oracle": "simulated_bernoulli",
                "queries": len(ids),
                "hard_queries": int(hard.sum()),
                "budget": budget,
                "n_d": args.n_d,
                "k_u": k_u,
                "k_p": k_p,
                "hard_coverage": coverage,
                "samples_per_correct": per_correct,
                "hard_correct_share": hard_share,
                **ratios,
                "elapsed_s": round(elapsed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
